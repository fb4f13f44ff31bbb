"""The QLoRA memory planner: pure logic against measured H200 peaks and the seed's table."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from ragtune.errors import InvalidRequestError
from trainer.plan import GPUS, PRESETS, PlanRequest, parse_params, plan, plan_for, shape_from_config
from trainer.plan_cli import register

GB = 1e9 / 1024**3  # one GB in GiB: the seed's table speaks GB


def _counted_sum(result) -> float:
    return sum(t.gib for t in result.terms if t.counted)


@pytest.mark.parametrize("size", list(PRESETS))
def test_terms_positive_and_sum_to_total(size):
    r = plan_for(size, seq_len=1024, batch_size=2)
    assert all(t.gib > 0 for t in r.terms), [t.key for t in r.terms if t.gib <= 0]
    assert _counted_sum(r) == pytest.approx(r.total_gib)
    assert r.peak_allocated_gib < r.peak_reserved_gib < r.total_gib
    # exactly one of the two transient phases is counted: the larger one
    loss, layer = r.term("loss"), r.term("layer_backward")
    assert loss.counted != layer.counted
    assert (loss if loss.counted else layer).gib >= (layer if loss.counted else loss).gib


@pytest.mark.parametrize("size", ["270M", "8B", "70B"])
def test_monotonic_in_seq_batch_rank(size):
    base = plan_for(size, seq_len=1024, batch_size=1, rank=16).total_gib
    assert plan_for(size, seq_len=2048, batch_size=1, rank=16).total_gib > base
    assert plan_for(size, seq_len=1024, batch_size=2, rank=16).total_gib > base
    assert plan_for(size, seq_len=1024, batch_size=1, rank=64).total_gib > base


def test_quantisation_and_upcast_terms():
    dq = plan_for("8B")
    sq = plan_for("8B", double_quant=False)
    up = plan_for("8B", upcast_fp32=True)
    # 0.127 vs 0.5 bits per quantised parameter
    assert sq.term("quant_constants").gib / dq.term("quant_constants").gib == pytest.approx(0.5 / 0.127, rel=0.01)
    assert up.term("embeddings").gib == pytest.approx(2 * dq.term("embeddings").gib)
    assert up.total_gib > dq.total_gib


def test_parameter_counts_match_published_sizes():
    assert PRESETS["270M"].total_params == pytest.approx(268e6, rel=0.01)  # tied: embedding counted once
    assert PRESETS["8B"].total_params == pytest.approx(8.03e9, rel=0.01)
    assert PRESETS["70B"].total_params == pytest.approx(70.6e9, rel=0.01)
    assert PRESETS["270M"].lora_params(16) == 3_796_992  # what peft reports for gemma-3-270m at r=16
    assert PRESETS["8B"].lora_params(16) == 41_943_040


def test_8b_matches_h200_measurements():
    """NOTES.md, H200: Llama-3.1-8B shape, seq 2048, r=16, GC, paged 8-bit AdamW, plain HF loop.

    batch 1: 11.0 GiB peak reserved, 9.5 allocated; batch 4: 27.0 GiB reserved.
    """
    b1 = plan_for("8B", seq_len=2048, batch_size=1, rank=16, loss_impl="full")
    assert b1.peak_reserved_gib == pytest.approx(11.0, rel=0.15)
    assert b1.peak_allocated_gib == pytest.approx(9.5, rel=0.15)
    b4 = plan_for("8B", seq_len=2048, batch_size=4, rank=16, loss_impl="full")
    assert b4.peak_reserved_gib == pytest.approx(27.0, rel=0.15)
    # The static part (NF4 + double-quant constants + bf16 embeddings/head) is ~5.3-5.5 GiB.
    static = sum(b1.term(k).gib for k in ("nf4_weights", "quant_constants", "embeddings", "norms"))
    assert static == pytest.approx(5.47, rel=0.05)
    # Throughput: ~4,340 tokens/s on an H200 at batch 1 (NOTES.md).
    h200 = next(o for o in b1.gpu_options if o.gpu.startswith("H200"))
    assert h200.tokens_per_s == pytest.approx(4340, rel=0.25)


# bench/qlora_peak.py on an H200 (torch 2.11+cu130, transformers 5.17, peft 0.21, bitsandbytes
# 0.50.2; r=16, 3 steps, empty_cache before training): (size, seq, batch, prepare_model_for_kbit_
# training, max_memory_allocated, max_memory_reserved) in GiB.
H200_BENCH = [
    ("8B", 2048, 1, False, 9.531, 10.223),
    ("8B", 2048, 4, False, 21.40, 23.88),
    ("8B", 512, 1, False, 6.56, 6.88),
    ("8B", 2048, 1, True, 12.477, 13.523),
    ("270M", 2048, 1, False, 7.50, 9.56),
    ("270M", 2048, 1, True, 8.864, 9.057),
]


@pytest.mark.parametrize(("size", "seq", "batch", "upcast", "allocated", "reserved"), H200_BENCH)
def test_matches_bench_runs(size, seq, batch, upcast, allocated, reserved):
    r = plan_for(size, seq_len=seq, batch_size=batch, upcast_fp32=upcast, loss_impl="full")  # plain loop
    assert r.peak_allocated_gib == pytest.approx(allocated, rel=0.03)
    assert r.peak_reserved_gib == pytest.approx(reserved, rel=0.20)


# The seed's table (GB): 7-8B 6.6-10, 13B 14-18, 30-32B 30-35, 70B 45-48, "at modest seq/batch".
# Setting used here: seq 1024, batch 1, r=16, the default recipe; the planner's total_gib (what
# nvidia-smi would show) converted to GB, with transformers' full-logits loss (the seed's era).
#  * the 13B row matches a modern 13-14B with a 152k vocabulary (Qwen2.5-14B: 14.9 GB); the
#    Llama-2-13B shape (32k vocabulary, small logits) needs only ~9.8 GB.
#  * the 30-32B row is not reproduced at seq <= 1024: Qwen2.5-32B comes to ~25 GB (29 GB at seq
#    2048, 29.5 GB with prepare_model_for_kbit_training's fp32 upcast at seq 1024), LLaMA-33B to
#    ~21.5 GB. We trust the term-by-term model over the seed's row there; the test allows 20%.
@pytest.mark.parametrize(
    ("size", "low", "high", "slack"),
    [("8B", 6.6, 10, 0.0), ("14B", 14, 18, 0.0), ("32B", 30, 35, 0.20), ("70B", 45, 48, 0.0)],
)
def test_seed_table_roughly_reproduced(size, low, high, slack):
    gb = plan_for(size, seq_len=1024, batch_size=1, rank=16, loss_impl="full").total_gib / GB
    assert low * (1 - slack) <= gb <= high * (1 + slack), f"{size}: {gb:.1f} GB"


def test_gemma_logits_dominate():
    r = plan_for("270M", seq_len=2048, loss_impl="full")
    assert r.peak_phase == "loss"
    assert r.term("loss").gib > 0.5 * r.total_gib
    # trl's chunked head never builds the [tokens, 262k] logits: the loss term shrinks ~20x
    chunked = plan_for("270M", seq_len=2048)
    assert chunked.term("loss").gib < r.term("loss").gib / 20
    assert chunked.peak_reserved_gib < r.peak_reserved_gib / 4


# bench/qlora_peak.py --loop trl on an H200 (trl 1.16 SFTTrainer as trainer/train.py runs it: bf16
# autocast, prepare_model_for_kbit_training, completion-only loss, paged_adamw_8bit, GC; r=16,
# 3 steps; torch 2.11+cu130, transformers 5.19, peft 0.21, bitsandbytes 0.50.2):
# (size, seq, batch, share of positions with a label, max_memory_allocated, max_memory_reserved) GiB.
# bench/results/qlora_peak_trl/*.json.
H200_TRL_BENCH = [
    ("270M", 128, 8, 0.8819, 0.936, 0.998),
    ("270M", 192, 8, 0.2932, 0.933, 1.010),
    ("270M", 2048, 1, 0.9927, 1.076, 1.168),
    ("8B", 2048, 1, 0.9927, 9.307, 9.557),
    ("8B", 512, 4, 0.9706, 9.304, 9.555),
]


@pytest.mark.parametrize(("size", "seq", "batch", "fraction", "allocated", "reserved"), H200_TRL_BENCH)
def test_matches_trl_bench_runs(size, seq, batch, fraction, allocated, reserved):
    r = plan_for(
        size, seq_len=seq, batch_size=batch, upcast_fp32=True, autocast=True, loss_token_fraction=fraction,
    )  # loss_impl="chunked" is the default
    assert r.peak_allocated_gib == pytest.approx(allocated, rel=0.12)
    assert r.peak_reserved_gib == pytest.approx(reserved, rel=0.15)
    # the chunked loss never holds a vocab-sized tensor through the layers' backward
    assert r.term("loss").gib < 0.6


# bench/train_gpu.py on an H200, ragtune's trainer as `ragtune train-adapter` runs it on CUDA
# (bf16 autocast, no upcast, decoder layers compiled, expandable allocator segments, completion-only
# loss, paged_adamw_8bit, GC; r=16; torch 2.11+cu130, transformers 5.19, trl 1.16, peft 0.21.0,
# bitsandbytes 0.50.2): bench/results/train_gpu.json, call 14 (batch 1: one row per pass, SDPA,
# activation offloading — the default there), call 12 (batch 4, padding-free through flex
# attention, with offloading) and call 10 (batch 4 without it — the default at batch 4).
H200_RAGTUNE_BENCH = [
    ("8B", 2048, 1, True, 0.992, 6.152, 6.357),
    ("8B", 2048, 4, True, 0.992, 7.914, 8.393),
    ("8B", 2048, 4, False, 0.992, 9.658, 10.031),
]


@pytest.mark.parametrize(("size", "seq", "batch", "offload", "fraction", "allocated", "reserved"), H200_RAGTUNE_BENCH)
def test_matches_ragtunes_gpu_recipe(size, seq, batch, offload, fraction, allocated, reserved):
    r = plan_for(size, seq_len=seq, batch_size=batch, autocast=True, loss_token_fraction=fraction,
                 activation_offloading=offload)
    assert r.peak_allocated_gib == pytest.approx(allocated, rel=0.15)
    assert r.peak_reserved_gib == pytest.approx(reserved, rel=0.15)


def test_chunked_loss_terms():
    full = plan_for("8B", seq_len=2048, upcast_fp32=True, autocast=True, loss_impl="full")
    chunked = plan_for("8B", seq_len=2048, upcast_fp32=True, autocast=True)
    assert full.peak_phase == "loss" and chunked.peak_phase == "layer_backward"
    # held logits (bf16/fp32 [T, V]) are gone from the layer phase
    assert full.term("layer_backward").gib - chunked.term("layer_backward").gib > 0.9
    # fewer labelled tokens, smaller loss phase; tiles stop growing past 4,096 labelled tokens
    half = plan_for("8B", seq_len=2048, upcast_fp32=True, autocast=True, loss_token_fraction=0.5)
    assert half.term("loss").gib < chunked.term("loss").gib
    with pytest.raises(InvalidRequestError):
        plan_for("8B", loss_token_fraction=0)
    with pytest.raises(InvalidRequestError):
        plan_for("8B", loss_impl="fused")


def test_recommendation_and_cost():
    r = plan_for("70B", seq_len=2048, tokens=10_000_000)
    rec = next(o for o in r.gpu_options if o.gpu == r.recommended_gpu)
    assert rec.fits and r.total_gib * 1.1 <= rec.memory_gib
    smaller = [o for o in r.gpu_options if o.memory_gib < rec.memory_gib - 3]
    assert smaller and not any(o.fits for o in smaller)
    assert r.hours and r.cost_usd and r.cost_usd > 0
    mine = plan_for("70B", seq_len=2048, tokens=10_000_000, gpu_hour_usd=10.0)
    assert mine.cost_usd == pytest.approx(mine.hours * 10.0)
    by_steps = plan_for("8B", seq_len=2048, batch_size=2, steps=100)
    assert by_steps.train_tokens == 100 * 2 * 2048
    huge = plan(PlanRequest(shape="70B", seq_len=65536, batch_size=8))
    assert huge.recommended_gpu is None and not any(o.fits for o in huge.gpu_options)
    assert len(GPUS) >= 8


@pytest.mark.parametrize("text", ["banana", "8X", "20B", "", "-8B"])
def test_bad_params_error_names_accepted_forms(text):
    with pytest.raises(InvalidRequestError) as exc:
        parse_params(text)
    assert "270M" in exc.value.message and "8B" in exc.value.message and "70B" in exc.value.message


@pytest.mark.parametrize(("text", "name"), [("8B", "Llama-3.1-8B"), ("8b", "Llama-3.1-8B"), ("270m", "gemma"), ("0.27B", "gemma"), ("70", "70B")])
def test_params_forms(text, name):
    assert name in parse_params(text).name


def test_bad_settings_are_invalid_request():
    with pytest.raises(InvalidRequestError):
        plan_for("8B", seq_len=0)
    with pytest.raises(InvalidRequestError):
        plan_for(None)


def test_config_folder(tmp_path):
    cfg = {
        "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 688,
        "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    s = shape_from_config(tmp_path)
    assert (s.hidden_size, s.num_layers, s.intermediate_size, s.head_dim, s.kv_dim) == (256, 4, 688, 32, 64)
    assert s.embedding_params == 2 * 1000 * 256
    r = plan_for(model_dir=tmp_path, seq_len=128)
    assert r.total_gib > 0 and r.lora_params == s.lora_params(16)

    # nested text_config (multimodal), tie default from the family
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "config.json").write_text(json.dumps({"text_config": {**cfg, "model_type": "gemma3_text", "tie_word_embeddings": None}}))
    assert shape_from_config(tmp_path / "mm").tied_embeddings is True

    with pytest.raises(InvalidRequestError, match="no config.json"):
        shape_from_config(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(InvalidRequestError, match="lacks"):
        shape_from_config(tmp_path / "bad")
    (tmp_path / "moe").mkdir()
    (tmp_path / "moe" / "config.json").write_text(json.dumps({**cfg, "num_local_experts": 8}))
    with pytest.raises(InvalidRequestError, match="mixture-of-experts"):
        shape_from_config(tmp_path / "moe")


def test_real_base_model_folder_matches_preset(base_model_dir):
    s = shape_from_config(base_model_dir)
    preset = PRESETS["270M"]
    assert s.model_dump(exclude={"name"}) == preset.model_dump(exclude={"name"})


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps `plan` a subcommand
    def _noop() -> None: ...

    return app


def test_cli_table_json_and_errors():
    runner = CliRunner()
    app = _app()
    res = runner.invoke(app, ["plan", "--params", "8B", "--seq", "2048", "--rank", "16", "--tokens", "1000000"])
    assert res.exit_code == 0, res.output
    assert "NF4 weights" in res.output and "recommended GPU" in res.output and "$" in res.output
    res = runner.invoke(app, ["plan", "--params", "270M", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["total_gib"] > 0 and {t["key"] for t in data["terms"]} >= {"nf4_weights", "loss", "checkpoints"}
    full = runner.invoke(app, ["plan", "--params", "270M", "--json", "--loss", "full"])
    assert full.exit_code == 0, full.output
    assert json.loads(full.stdout)["total_gib"] > data["total_gib"] + 3  # the 262k-vocab logits
    trl = runner.invoke(app, ["plan", "--params", "270M", "--json", "--upcast-fp32", "--autocast", "--seq", "128", "--batch", "8"])
    assert trl.exit_code == 0, trl.output
    assert 0.7 < json.loads(trl.stdout)["peak_reserved_gib"] < 1.2  # measured 1.00 GiB (trl loop)
    res = runner.invoke(app, ["plan", "--params", "banana"])
    assert res.exit_code == 2
    assert "270M" in res.output and "70B" in res.output
    res = runner.invoke(app, ["plan"])
    assert res.exit_code == 2 and "--params" in res.output


def test_cli_memory_budget_picks_the_checkpointed_layers():
    from trainer.plan import layers_to_checkpoint

    runner = CliRunner()
    app = _app()
    short_rows = ["plan", "--params", "8B", "--seq", "107", "--batch", "16", "--autocast", "--json"]
    res = runner.invoke(app, [*short_rows, "--memory-budget", "15"])
    assert res.exit_code == 0, res.output
    layers = layers_to_checkpoint(PlanRequest(shape="8B", seq_len=107, batch_size=16, autocast=True), 15)
    assert f"checkpoint the first {layers} of 32 layers" in res.stderr
    data = json.loads(res.stdout)
    assert data["total_gib"] <= 15 and "kept_activations" in {t["key"] for t in data["terms"]}
    same = runner.invoke(app, [*short_rows, "--checkpointed-layers", str(layers)])
    assert json.loads(same.stdout)["total_gib"] == data["total_gib"]
    for bad, needle in ((["--memory-budget", "3"], "every layer checkpointed"),
                        (["--memory-budget", "15", "--offload"], "--offload"),
                        (["--memory-budget", "15", "--checkpointed-layers", "3"], "not both"),
                        (["--checkpointed-layers", "40"], "32 layers")):
        res = runner.invoke(app, [*short_rows, *bad])
        assert res.exit_code == 2 and needle in res.output, res.output


def _bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "qlora_peak.py"
    spec = importlib.util.spec_from_file_location("qlora_peak_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_trl_loop_skips_without_cuda(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("has CUDA: the bench would measure")
    assert _bench().main(["--loop", "trl", "--shape", "gemma270m", "--seq", "128", "--batch", "8"]) == 0
    assert "skipping" in capsys.readouterr().out


def test_bench_compare_uses_the_loop_loss(tmp_path):
    from pathlib import Path

    bench = _bench()
    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    trl = json.loads((results / "qlora_peak_trl" / "trl_l8_s2048_b1.json").read_text())
    plain = json.loads((results / "qlora_peak" / "l8_b1_noprep.json").read_text())
    assert bench._add_estimate(trl)["planner"]["loss_impl"] == "chunked"
    assert bench._add_estimate(plain)["planner"]["loss_impl"] == "full"
    assert abs(trl["rel_error_reserved"]) < 0.15 and abs(plain["rel_error_reserved"]) < 0.15


def test_layers_left_unchecked_keep_their_activations_and_skip_the_recompute():
    full = plan_for("8B", seq_len=2048, batch_size=4, autocast=True)
    layers = PRESETS["8B"].num_layers
    same = plan_for("8B", seq_len=2048, batch_size=4, autocast=True, checkpointed_layers=layers)
    assert same.peak_allocated_gib == pytest.approx(full.peak_allocated_gib)
    assert "kept_activations" not in {t.key for t in full.terms}
    one = plan_for("8B", seq_len=2048, batch_size=4, autocast=True, checkpointed_layers=layers - 1)
    five = plan_for("8B", seq_len=2048, batch_size=4, autocast=True, checkpointed_layers=layers - 5)
    per_layer = one.term("kept_activations").gib
    assert five.term("kept_activations").gib == pytest.approx(5 * per_layer)
    assert five.term("checkpoints").gib == pytest.approx(full.term("checkpoints").gib * (layers - 5) / layers)
    # Each kept layer adds its activations (less the input a checkpoint would have held).
    assert five.peak_allocated_gib - one.peak_allocated_gib == pytest.approx(
        4 * (per_layer - full.term("checkpoints").gib / layers), rel=1e-6)
    # No checkpointing at all: two passes per layer instead of three.
    none = plan_for("8B", seq_len=2048, batch_size=4, autocast=True, checkpointed_layers=0)
    assert none.gpu_options[0].tokens_per_s / full.gpu_options[0].tokens_per_s == pytest.approx(1.45, abs=0.05)
    with pytest.raises(InvalidRequestError, match="33"):
        plan_for("8B", checkpointed_layers=33)


def test_layers_to_checkpoint_is_the_fewest_within_the_budget():
    from trainer.plan import layers_to_checkpoint

    req = PlanRequest(shape="8B", seq_len=128, batch_size=16, autocast=True)

    def total(k):
        return plan(req.model_copy(update={"checkpointed_layers": k})).total_gib

    assert 0 < layers_to_checkpoint(req, 15.0) < 32
    for budget in (total(32), 10.0, 15.0, 20.0, total(0)):
        k = layers_to_checkpoint(req, budget)
        assert total(k) <= budget and all(total(fewer) > budget for fewer in range(k))
    assert layers_to_checkpoint(req, total(0)) == 0
    assert layers_to_checkpoint(req, min(total(k) for k in range(33)) - 0.01) is None
