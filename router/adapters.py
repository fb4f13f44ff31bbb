"""LoRA adapter folders: check one before an engine sees it, and find all under a directory.

Engines fail late and obscurely on a bad adapter (vLLM inside its engine process, peft halfway
through wrapping the model), so every folder is checked here first and rejected with a message
that names the file and the problem.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ragtune.errors import InvalidRequestError

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
# Names travel in URLs and in the OpenAI `model` field; "base" means "no adapter" there.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED_NAMES = frozenset({"base"})


class AdapterInfo(BaseModel):
    """What ragtune needs to know about an adapter folder, read from its adapter_config.json."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    rank: int  # the largest rank of any module (``r`` or a ``rank_pattern`` override)
    alpha: float | None = None
    base_model_name_or_path: str | None = None
    target_modules: list[str]  # a regex string in the config becomes a one-element list


def validate_adapter_name(name: str) -> str:
    if name in RESERVED_NAMES:
        raise InvalidRequestError(f"'{name}' is reserved (it means the base model); choose another adapter name.", param="name")
    if not _NAME_RE.match(name):
        raise InvalidRequestError(
            f"Invalid adapter name '{name}': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
            param="name",
        )
    return name


def validate_adapter_dir(path: Path, max_rank: int, *, name: str | None = None, label: str | None = None) -> AdapterInfo:
    """Check that ``path`` is a loadable LoRA adapter with rank <= ``max_rank``.

    Reads only the config and the safetensors header (no tensors), so it is cheap enough to
    run on every load request. Raises InvalidRequestError with the reason otherwise; messages
    call the folder ``label`` when given (the service shows callers no server paths).
    """
    path = Path(path).expanduser()
    shown = label or str(path)
    if not path.is_dir():
        raise InvalidRequestError(f"Adapter folder '{shown}' does not exist or is not a folder.", param="path")
    config_path = path / CONFIG_FILE
    weights_path = path / WEIGHTS_FILE
    config_shown, weights_shown = f"{shown}/{CONFIG_FILE}", f"{shown}/{WEIGHTS_FILE}"
    for required in (config_path, weights_path):
        if not required.is_file():
            raise InvalidRequestError(
                f"Adapter folder '{shown}' has no {required.name} (expected {CONFIG_FILE} and {WEIGHTS_FILE}).",
                param="path",
            )

    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"Cannot parse {config_shown}: {exc}", param="path") from exc
    if not isinstance(config, dict):
        raise InvalidRequestError(f"{config_shown} must hold a JSON object.", param="path")

    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise InvalidRequestError(f"{config_shown}: peft_type is '{peft_type}', only LORA adapters are served.", param="path")
    rank = _rank(config, config_shown)
    if rank > max_rank:
        raise InvalidRequestError(
            f"Adapter '{path.name}' has LoRA rank {rank}, above the engine's max_lora_rank {max_rank} "
            "(raise RAGTUNE_MAX_LORA_RANK, which costs memory, or retrain with a smaller r).",
            param="path",
        )
    targets = config.get("target_modules") or []
    target_modules = [targets] if isinstance(targets, str) else [str(t) for t in targets]
    if not target_modules:
        raise InvalidRequestError(f"{config_shown}: target_modules is empty.", param="path")

    _check_safetensors(weights_path, weights_shown)
    alpha = config.get("lora_alpha")
    return AdapterInfo(
        name=name or path.name,
        path=path.resolve(),
        rank=rank,
        alpha=float(alpha) if isinstance(alpha, int | float) else None,
        base_model_name_or_path=config.get("base_model_name_or_path"),
        target_modules=target_modules,
    )


def _rank(config: dict, config_path: Path | str) -> int:
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise InvalidRequestError(f"{config_path}: 'r' must be a positive integer, got {r!r}.", param="path")
    pattern = config.get("rank_pattern") or {}
    overrides = [v for v in pattern.values() if isinstance(v, int)] if isinstance(pattern, dict) else []
    return max([r, *overrides])


def _check_safetensors(weights_path: Path, shown: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as fh:
            keys = list(fh.keys())
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise InvalidRequestError(f"Cannot read {shown}: {exc}", param="path") from exc
    if not any("lora_A" in k or "lora_B" in k for k in keys):
        raise InvalidRequestError(f"{shown} holds no LoRA weights (no lora_A/lora_B tensors).", param="path")


def discover_adapters(adapters_dir: Path, *, max_rank: int | None = None) -> dict[str, AdapterInfo]:
    """Every valid adapter folder directly under ``adapters_dir``, keyed by folder name.

    Hidden folders ('.name') are skipped: the trainer publishes atomically by writing into a
    hidden temporary folder and renaming it. A folder with an adapter_config.json that fails
    validation is skipped with a warning, so one broken adapter does not keep the service down.
    """
    adapters_dir = Path(adapters_dir).expanduser()
    if not adapters_dir.is_dir():
        return {}
    found: dict[str, AdapterInfo] = {}
    for sub in sorted(adapters_dir.iterdir()):
        if sub.name.startswith(".") or not sub.is_dir() or not (sub / CONFIG_FILE).is_file():
            continue
        try:
            validate_adapter_name(sub.name)
            found[sub.name] = validate_adapter_dir(sub, max_rank if max_rank is not None else 1 << 30, name=sub.name)
        except InvalidRequestError as exc:
            log.warning("Skipping adapter folder %s: %s", sub, exc.message)
    return found


def check_adapter_card(path: Path, expected_base_hash: str, *, required: bool = False, label: str | None = None):
    """Read ``card.json`` in the adapter folder ``path`` and check its base model.

    An adapter applied to other base weights than it was trained on produces fluent nonsense
    with no error, so a card naming another base is refused (InvalidRequestError, both hashes in
    the message). Returns the card, or None when the folder has none and ``required`` is false
    (hand-made adapters at start-up; the HTTP admin API requires a card).
    """
    from ragtune.card import CARD_FILE, read_card

    shown = label or str(path)
    if not (Path(path) / CARD_FILE).is_file():
        if required:
            raise InvalidRequestError(
                f"Adapter folder '{shown}' has no {CARD_FILE}: only adapters with a card (written by `ragtune "
                "train`, naming the base weights they were trained on) can be loaded here.", param="path")
        return None
    try:
        card = read_card(Path(path))
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"Adapter folder '{shown}': its {CARD_FILE} is not a valid adapter card.",
                                  param="path") from exc
    if card.base_model_hash != expected_base_hash:
        raise InvalidRequestError(
            f"Adapter '{shown}' was trained on base model '{card.base_model}' with weights hash "
            f"{card.base_model_hash}, but this service's base model has hash {expected_base_hash}: "
            "it would produce nonsense here. Retrain it on this base model or serve its own base.",
            param="path",
        )
    return card
