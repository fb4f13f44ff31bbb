"""TrainConfig: the seed's defaults, YAML + CLI overrides, errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragtune.errors import ConfigError
from trainer.config import ALL_PROJECTIONS, TrainConfig, load_config, resolve_runtime


def test_defaults_are_the_qlora_recipe():
    c = TrainConfig(style="s", data="d.jsonl")
    assert (c.quantization, c.double_quant, c.compute_dtype) == ("auto", True, "bfloat16")
    assert (c.optimizer, c.gradient_checkpointing) == ("paged_adamw_8bit", True)
    assert (c.lora_r, c.lora_alpha, c.lora_dropout, c.lora_bias) == (16, 16, 0.0, "none")
    assert c.target_modules == ALL_PROJECTIONS
    assert (c.seed, c.max_seq_length, c.epochs, c.learning_rate) == (3407, 2048, 2.0, 2e-4)
    assert c.eval_fraction == 0.1 and c.gpu_hour_usd == 3.5
    assert all(field.description for field in TrainConfig.model_fields.values())


def test_adapter_and_work_dirs_follow_settings(tmp_path):
    from ragtune.settings import Settings

    settings = Settings(home=tmp_path)
    c = TrainConfig(style="acme-json", data="d.jsonl")
    assert c.adapter_dir(settings) == tmp_path / "adapters" / "acme-json"
    assert c.work_dir(settings) == tmp_path / "adapters" / ".work-acme-json"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("epochs", 0, "epochs must be > 0 (got 0"),
        ("lora_r", 0, "lora_r must be >= 1 (got 0)"),
        ("lora_dropout", 1.5, "lora_dropout must be in [0, 1) (got 1.5)"),
        ("eval_fraction", 0, "eval_fraction must be in (0, 1) (got 0"),
        ("style", "../evil", "style '../evil' must be"),
        ("target_modules", [], "target_modules must name at least one layer"),
        ("quantization", "int3", "quantization"),
    ],
)
def test_validation_errors_name_field_and_value(field, value, needle):
    with pytest.raises(ValidationError) as info:
        TrainConfig(**{"style": "s", "data": "d.jsonl", field: value})
    assert needle in str(info.value)
    assert info.value.errors()[0]["loc"] == (field,)


def test_yaml_recipe_with_cli_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("lora_r: 32\nepochs: 3\nlearning_rate: 1.0e-4\n")
    c = load_config(recipe, style="s", data="d.jsonl", epochs=1.0, max_steps=None)
    assert (c.lora_r, c.epochs, c.learning_rate, c.max_steps) == (32, 1.0, 1e-4, None)


def test_yaml_errors_name_file_and_field(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("lora_r: 16\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as info:
        load_config(recipe, style="s", data="d.jsonl")
    assert str(recipe) in info.value.message and "learning_rat: unknown field" in info.value.message
    assert info.value.param == "learning_rat"

    recipe.write_text("epochs: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: epochs: epochs must be > 0 \(got -1"):
        load_config(recipe, style="s", data="d.jsonl")

    recipe.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(recipe, style="s", data="d.jsonl")

    with pytest.raises(ConfigError, match="style: required"):
        load_config(None, data="d.jsonl")


def test_shipped_recipes_load():
    for name in ("format", "voice", "e2e-json"):
        c = load_config(f"trainer/recipes/{name}.yaml", style=name, data="d.jsonl")
        assert c.target_modules == ALL_PROJECTIONS
    e2e, fmt = (load_config(f"trainer/recipes/{n}.yaml", style="s", data="d") for n in ("e2e-json", "format"))
    assert e2e.json_schema is not None and fmt.json_schema is None
    assert e2e.model_dump(exclude={"json_schema"}) == fmt.model_dump(exclude={"json_schema"})


def test_recipe_extends_another_and_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text("lora_r: 32\nepochs: 3\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nepochs: 1\n")
    c = load_config(tmp_path / "child.yaml", style="s", data="d")
    assert (c.lora_r, c.epochs) == (32, 1.0)
    (tmp_path / "base.yaml").write_text("extends: child.yaml\n")
    with pytest.raises(ConfigError, match="'extends' loops"):
        load_config(tmp_path / "child.yaml", style="s", data="d")
    (tmp_path / "child.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml does not exist"):
        load_config(tmp_path / "child.yaml", style="s", data="d")


def test_runtime_on_cpu_uses_bf16_lora_and_records_the_optimizer_fallback():
    rt = resolve_runtime(TrainConfig(style="s", data="d"), cuda=False)
    assert (rt.device, rt.quantization, rt.method, rt.optimizer) == ("cpu", "none", "lora-bf16", "adamw_torch")
    assert rt.eval_during_training
    assert any("adamw_torch" in n for n in rt.notes)
    # Forced NF4 on CPU trains without in-loop eval (the 4-bit eval trap).
    rt4 = resolve_runtime(TrainConfig(style="s", data="d", quantization="nf4"), cuda=False)
    assert rt4.method == "qlora-nf4" and not rt4.eval_during_training


def test_runtime_on_cuda_is_qlora_with_paged_adamw():
    rt = resolve_runtime(TrainConfig(style="s", data="d"), cuda=True)
    assert (rt.device, rt.quantization, rt.optimizer, rt.bf16_autocast) == ("cuda", "nf4", "paged_adamw_8bit", True)
    assert rt.eval_during_training


def test_cpu_runs_the_recipes_batch_in_fewer_larger_passes_without_checkpointing():
    cfg = TrainConfig(style="s", data="d", per_device_batch_size=2, gradient_accumulation_steps=4)
    rt = resolve_runtime(cfg, cuda=False, longest_tokens=60)
    assert (rt.micro_batch, rt.accumulation, rt.gradient_checkpointing) == (8, 1, False)
    # Long rows: the pass stays within CPU_MICRO_BATCH_TOKENS, and the step's batch is still 8.
    rt = resolve_runtime(cfg, cuda=False, longest_tokens=700)
    assert (rt.micro_batch, rt.accumulation) == (2, 4)
    rt = resolve_runtime(cfg, cuda=False, longest_tokens=4000)
    assert (rt.micro_batch, rt.accumulation) == (1, 8)
    # Checkpointing the user asked for by name is kept.
    explicit = TrainConfig(style="s", data="d", gradient_checkpointing=True)
    assert resolve_runtime(explicit, cuda=False, longest_tokens=60).gradient_checkpointing


def test_cuda_keeps_the_recipes_batch_and_checkpointing():
    rt = resolve_runtime(TrainConfig(style="s", data="d", per_device_batch_size=2, gradient_accumulation_steps=4),
                         cuda=True, longest_tokens=60)
    assert (rt.micro_batch, rt.accumulation, rt.gradient_checkpointing) == (2, 4, True)


def test_gpu_speedups_are_on_with_cuda_and_off_on_cpu():
    cfg = TrainConfig(style="s", data="d", torch_compile=False)  # liger's default without the compiler
    gpu = resolve_runtime(cfg, cuda=True, model_type="llama")
    assert gpu.padding_free and not gpu.activation_offloading
    import importlib.util

    assert gpu.liger_kernels == (importlib.util.find_spec("liger_kernel") is not None)
    # Only on the families whose loss was checked with them; asked for by name, on for any.
    gemma = resolve_runtime(cfg, cuda=True, model_type="gemma3_text")
    assert not gemma.liger_kernels and any("liger kernels off for gemma3_text" in n for n in gemma.notes)
    assert resolve_runtime(TrainConfig(style="s", data="d", liger_kernels=True), cuda=True,
                           model_type="gemma3_text").liger_kernels
    cpu = resolve_runtime(cfg, cuda=False)
    assert not (cpu.liger_kernels or cpu.padding_free or cpu.activation_offloading)
    # Asked for by name on CPU: still off, and the card says why.
    asked = resolve_runtime(TrainConfig(style="s", data="d", liger_kernels=True, padding_free=True), cuda=False)
    assert not (asked.liger_kernels or asked.padding_free)
    assert any("CUDA-side" in n for n in asked.notes)
    off = resolve_runtime(TrainConfig(style="s", data="d", liger_kernels=False, padding_free=False), cuda=True)
    assert not (off.liger_kernels or off.padding_free)
    assert {"liger_kernels", "padding_free", "activation_offloading", "torch_compile"} <= set(gpu.as_dict())


def test_torch_compile_is_cuda_side():
    asked = TrainConfig(style="s", data="d", torch_compile=True)
    assert resolve_runtime(asked, cuda=True, model_type="llama").torch_compile
    cpu = resolve_runtime(asked, cuda=False)
    assert not cpu.torch_compile and any("torch_compile" in n for n in cpu.notes)
    assert not resolve_runtime(TrainConfig(style="s", data="d", torch_compile=False), cuda=True).torch_compile
    # Compiled layers leave the fused norms and activations to the compiler, unless liger is asked for.
    assert not resolve_runtime(asked, cuda=True, model_type="llama").liger_kernels
    assert resolve_runtime(TrainConfig(style="s", data="d", torch_compile=True, liger_kernels=True), cuda=True,
                           model_type="llama").liger_kernels


def test_activation_offloading_defaults_on_for_one_row_passes_on_cuda():
    one = TrainConfig(style="s", data="d", per_device_batch_size=1, gradient_accumulation_steps=8)
    assert resolve_runtime(one, cuda=True).activation_offloading
    assert not resolve_runtime(one, cuda=False).activation_offloading
    assert not resolve_runtime(TrainConfig(style="s", data="d", per_device_batch_size=4), cuda=True).activation_offloading
    named = TrainConfig(style="s", data="d", per_device_batch_size=1, activation_offloading=False)
    assert not resolve_runtime(named, cuda=True).activation_offloading


def test_torch_compile_default_needs_triton_and_a_c_compiler(monkeypatch):
    import importlib.util
    import shutil

    cfg = TrainConfig(style="s", data="d")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "triton" else None)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/gcc" if name == "gcc" else None)
    assert resolve_runtime(cfg, cuda=True, model_type="llama").torch_compile
    monkeypatch.setattr(shutil, "which", lambda name: None)
    rt = resolve_runtime(cfg, cuda=True, model_type="llama")
    assert not rt.torch_compile and any("C compiler" in n for n in rt.notes)


def test_attention_follows_the_batch_layout():
    cfg = TrainConfig(style="s", data="d")
    # Padding-free on CUDA: flex attention (its block mask skips the blocks between rows).
    assert resolve_runtime(cfg, cuda=True, model_type="llama").attention == "flex_attention"
    assert resolve_runtime(cfg, cuda=False).attention == "sdpa"
    padded = resolve_runtime(TrainConfig(style="s", data="d", padding_free=False), cuda=True)
    assert padded.attention == "sdpa"
    # One row per pass: nothing to pack, and SDPA keeps its flash kernel (faster there than flex).
    single = resolve_runtime(TrainConfig(style="s", data="d", per_device_batch_size=1), cuda=True)
    assert not single.padding_free and single.attention == "sdpa"
    named = resolve_runtime(TrainConfig(style="s", data="d", attention="sdpa"), cuda=True)
    assert named.attention == "sdpa" and named.as_dict()["attention"] == "sdpa"
    with pytest.raises(ValueError, match="attention"):
        TrainConfig(style="s", data="d", attention="flash")


def test_cpu_without_native_bf16_trains_in_fp32(monkeypatch):
    import ragtune.hardware

    cfg = TrainConfig(style="s", data="d")
    monkeypatch.setattr(ragtune.hardware, "cpu_has_native_bf16", lambda: False)
    emulated = resolve_runtime(cfg, cuda=False)
    assert emulated.compute_dtype == "float32" and any("no native bf16" in n for n in emulated.notes)
    # Named in the recipe: kept; on CUDA the question does not arise.
    assert resolve_runtime(TrainConfig(style="s", data="d", compute_dtype="bfloat16"), cuda=False).compute_dtype \
        == "bfloat16"
    assert resolve_runtime(cfg, cuda=True).compute_dtype == "bfloat16"
    monkeypatch.setattr(ragtune.hardware, "cpu_has_native_bf16", lambda: True)
    native = resolve_runtime(cfg, cuda=False)
    assert native.compute_dtype == "bfloat16" and native.as_dict()["compute_dtype"] == "bfloat16"



def test_checkpoint_in_graph_needs_compiled_checkpointed_layers():
    asked = {"style": "s", "data": "d", "checkpoint_in_graph": True, "torch_compile": True}
    assert resolve_runtime(TrainConfig(**asked), cuda=True).checkpoint_in_graph
    assert not resolve_runtime(TrainConfig(style="s", data="d", torch_compile=True), cuda=True).checkpoint_in_graph
    off = resolve_runtime(TrainConfig(**asked, gradient_checkpointing=False), cuda=True)
    assert not off.checkpoint_in_graph and any("checkpoint_in_graph needs" in n for n in off.notes)
    assert not resolve_runtime(TrainConfig(**asked), cuda=False).checkpoint_in_graph


def test_memory_budget_picks_the_layers_to_checkpoint_from_the_plan():
    from trainer.plan import PRESETS

    shape = PRESETS["8B"]
    cfg = TrainConfig(style="s", data="d", per_device_batch_size=16, gradient_accumulation_steps=1,
                      memory_budget_gib=15)
    short_rows = resolve_runtime(cfg, cuda=True, longest_tokens=107, shape=shape)
    assert 0 < short_rows.checkpointed_layers < shape.num_layers
    assert short_rows.as_dict()["checkpointed_layers"] == short_rows.checkpointed_layers
    assert any(f"{shape.num_layers - short_rows.checkpointed_layers} of 32 layers keep" in n
               for n in short_rows.notes)
    # Longer rows keep fewer layers within the same budget; a roomier budget keeps more.
    long_rows = resolve_runtime(cfg, cuda=True, longest_tokens=256, shape=shape)
    assert long_rows.checkpointed_layers > short_rows.checkpointed_layers
    roomy = resolve_runtime(cfg.model_copy(update={"memory_budget_gib": 60}), cuda=True, longest_tokens=107,
                            shape=shape)
    assert roomy.checkpointed_layers == 0
    # Unset, or too small a budget for any layer to keep its activations: every layer checkpointed.
    assert resolve_runtime(cfg.model_copy(update={"memory_budget_gib": None}), cuda=True, longest_tokens=107,
                           shape=shape).checkpointed_layers is None
    tight = resolve_runtime(cfg.model_copy(update={"memory_budget_gib": 4}), cuda=True, longest_tokens=107,
                            shape=shape)
    assert tight.checkpointed_layers is None and any("above the budget" in n for n in tight.notes)


def test_memory_budget_turns_default_offloading_off_and_refuses_explicit_offloading():
    from trainer.plan import PRESETS

    one_row = {"style": "s", "data": "d", "per_device_batch_size": 1, "memory_budget_gib": 30}
    rt = resolve_runtime(TrainConfig(**one_row), cuda=True, longest_tokens=2048, shape=PRESETS["8B"])
    assert rt.checkpointed_layers is not None and not rt.activation_offloading
    with pytest.raises(ConfigError, match="activation_offloading"):
        resolve_runtime(TrainConfig(**one_row, activation_offloading=True), cuda=True, longest_tokens=2048,
                        shape=PRESETS["8B"])


@pytest.mark.parametrize(("update", "cuda", "why"), [
    ({}, False, "on CPU"),
    ({"gradient_checkpointing": False}, True, "gradient checkpointing is off"),
    ({"quantization": "none"}, True, "4-bit base"),
])
def test_memory_budget_is_ignored_where_it_cannot_apply(update, cuda, why):
    from trainer.plan import PRESETS

    cfg = TrainConfig(style="s", data="d", memory_budget_gib=60, **update)
    rt = resolve_runtime(cfg, cuda=cuda, longest_tokens=107, shape=PRESETS["8B"])
    assert rt.checkpointed_layers is None
    assert any(n.startswith("memory_budget_gib ignored") and why in n for n in rt.notes)
    no_shape = resolve_runtime(TrainConfig(style="s", data="d", memory_budget_gib=60), cuda=True, longest_tokens=107)
    assert no_shape.checkpointed_layers is None and any("config.json" in n for n in no_shape.notes)
