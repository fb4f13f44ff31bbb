"""The training loop lets the host run ahead of the device between the backward and the optimizer.

On CUDA, reading a device value on the host (``.item()``, ``bool()``, ``float()``) waits for every
queued kernel. Right after the backward that leaves the GPU idle while the host launches the
8-bit optimizer's hundreds of small per-parameter updates, work it could otherwise queue behind
the backward. Such reads all go through one dispatcher op, ``aten._local_scalar_dense``, on CPU
as on CUDA, so counting it in a real CPU run finds the reads that would sync a GPU.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from trainer.train import SyncBeforeCheckpoint  # noqa: E402

VOCAB = 200


class HostReads(TorchDispatchMode):
    """Counts host reads of tensor values while active."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


class StepWindows(TrainerCallback):
    """Counts with ``counter`` (a context manager with a ``count``) after each micro-batch's
    ``training_step`` (forward + backward) until the next one or the optimizer step: the loop's own
    loss bookkeeping and the gradient clipping, summed per optimizer step in ``after_backward``.
    With ``optimizer_step``, also over the optimizer step itself, in ``optimizer``."""

    def __init__(self, trainer, counter, *, optimizer_step: bool = False):
        self.counter, self.optimizer_step = counter, optimizer_step
        self.after_backward: list[int] = []
        self.optimizer: list[int] = []
        self.pending = 0
        self.active = None
        step = trainer.training_step

        def training_step(*args, **kwargs):
            self._close()
            loss = step(*args, **kwargs)
            self._open()
            return loss

        trainer.training_step = training_step
        trainer.add_callback(self)

    def _open(self):
        self.active = self.counter()
        self.active.__enter__()

    def _close(self):
        if self.active is not None:
            self.active.__exit__(None, None, None)
            self.pending += self.active.count
            self.active = None

    def _take(self) -> int:
        self._close()
        taken, self.pending = self.pending, 0
        return taken

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.after_backward.append(self._take())
        if self.optimizer_step:
            self._open()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.optimizer_step:
            self.optimizer.append(self._take())


class Events(TrainerCallback):
    def __init__(self):
        self.log: list[str] = []

    def on_save(self, args, state, control, **kwargs):
        self.log.append(f"save@{state.global_step}")


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def ragtune_loop(tmp_path, callbacks=(), cuda: bool = False, **fields):
    """trl's SFTTrainer (the CUDA loop's class) with ragtune's training arguments, on a tiny Llama."""
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTTrainer

    from trainer.config import TrainConfig, resolve_runtime
    from trainer.train import lora_config, sft_config

    rows = [{"prompt": " ".join(f"w{(7 * i + j) % 190 + 3}" for j in range(4 + i % 3)),
             "completion": " ".join(f"w{(3 * i + j) % 190 + 3}" for j in range(2 + i % 4))} for i in range(24)]
    config = TrainConfig(style="s", data=tmp_path / "rows.jsonl", max_steps=4, per_device_batch_size=2,
                         gradient_accumulation_steps=2, eval_steps=2, logging_steps=100, **fields)
    runtime = resolve_runtime(config, cuda=cuda)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB))
    return SFTTrainer(model=model, args=sft_config(config, runtime, tmp_path / "work", progress=False),
                      train_dataset=Dataset.from_list(rows[:20]), eval_dataset=Dataset.from_list(rows[20:]),
                      processing_class=word_tokenizer(), peft_config=lora_config(config), callbacks=list(callbacks))


def test_no_host_read_between_backward_and_optimizer_step(tmp_path):
    trainer = ragtune_loop(tmp_path)
    probe = StepWindows(trainer, HostReads)
    trainer.train()
    assert probe.after_backward == [0, 0, 0, 0]


def test_the_probe_sees_transformers_nan_filter(tmp_path):
    """The check above can fail: transformers' default NaN filter reads each step's loss there."""
    trainer = ragtune_loop(tmp_path)
    trainer.args.logging_nan_inf_filter = True
    probe = StepWindows(trainer, HostReads)
    trainer.train()
    assert len(probe.after_backward) == 4 and all(n >= 2 for n in probe.after_backward)  # >= 1 per micro-batch


def test_device_syncs_only_before_saves_and_evaluations(tmp_path, monkeypatch):
    """With the real Trainer's callbacks in their real order: a sync at the steps that checkpoint
    (every ``eval_steps``, and the last step), before the save reads the optimizer states."""
    events = Events()
    trainer = ragtune_loop(tmp_path, callbacks=[SyncBeforeCheckpoint(), events])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: events.log.append(f"sync@{trainer.state.global_step}"))
    trainer.train()
    assert events.log == ["sync@2", "save@2", "sync@4", "save@4"]


def _cuda_with_bitsandbytes() -> bool:
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


class DeviceSyncs:
    """Device syncs while active: implicit ones from CUDA's own detector
    (``torch.cuda.set_sync_debug_mode``, which also sees boolean-mask indexing and device-to-host
    copies) plus explicit ``torch.cuda.synchronize()`` calls (bitsandbytes' kind), counted by
    wrapping it for the time."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        import warnings

        self._real = torch.cuda.synchronize

        def synchronize(*args, **kwargs):
            self.count += 1
            return self._real(*args, **kwargs)

        torch.cuda.synchronize = synchronize
        self._record = warnings.catch_warnings(record=True)
        self._caught = self._record.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self._record.__exit__(*exc)
        torch.cuda.synchronize = self._real
        self.count += sum("synchroniz" in str(w.message) for w in self._caught)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_with_bitsandbytes(), reason="needs CUDA and bitsandbytes")
def test_cuda_backward_and_optimizer_step_queue_without_a_sync(tmp_path):
    from trainer.train import bnb_steps_without_syncs

    trainer = ragtune_loop(tmp_path / "a", cuda=True)
    assert trainer.args.optim == "paged_adamw_8bit"
    probe = StepWindows(trainer, DeviceSyncs, optimizer_step=True)
    with bnb_steps_without_syncs():
        trainer.train()
    assert probe.after_backward == [0, 0, 0, 0]
    assert probe.optimizer == [0, 0, 0, 0]

    # The detector works: without the trainer's patch, bitsandbytes syncs after every parameter.
    trainer = ragtune_loop(tmp_path / "b", cuda=True)
    probe = StepWindows(trainer, DeviceSyncs, optimizer_step=True)
    trainer.train()
    assert len(probe.optimizer) == 4 and min(probe.optimizer) >= 2
