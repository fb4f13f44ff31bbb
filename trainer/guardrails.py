"""Guardrails: warnings before training (the recipe) and during it (the loss curves).

Every finding is a :class:`ragtune.card.CardWarning` (code, message, step): printed when it
happens, and kept in the adapter card and the report. Early stopping on eval loss with
best-checkpoint restore is wired here too (:func:`early_stopping_callbacks`).

Thresholds, and why:

* ``memorising`` — a training loss below :data:`MEMORISING_LOSS` (0.2 nats/token) means the
  adapter reproduces its training completions almost verbatim; on a small set that is
  memorisation, not a learned format. Fewer epochs, a lower learning rate or more data help.
  When the latest eval loss is low too (< 1.5 × the threshold) the warning says so: held-out rows
  fitting as well points to a very regular target (a JSON format) rather than recall.
* ``overfitting`` — eval loss rising for :data:`OVERFIT_RISES` (2) evals in a row while the
  training loss falls over the same stretch: the adapter is fitting the training rows at the
  expense of unseen ones. Early stopping restores the best checkpoint.
* ``plateau-high`` — the last :data:`PLATEAU_WINDOW` (5) logged training losses all lie within
  :data:`PLATEAU_SPREAD` (2%) of their mean and that mean is above :data:`PLATEAU_LOSS` (1.0):
  learning has stalled while the task is still far from fitted; the adapter may lack capacity —
  raise ``lora_r`` to 32 or 64 (or check the learning rate and the data).
* ``lora-grad-zero`` — the LoRA gradient norm at the first optimizer step is zero or not finite:
  nothing can be learned (the NOTES trap: 4-bit evaluation before training on CPU shrinks LoRA
  gradients; a frozen or detached adapter gives exactly zero). Training is stopped.
* ``loss-not-finite`` — a logged training loss is NaN or infinite: the update that produced it
  has already spread NaN through the LoRA weights, so every later step is wasted. Training is
  stopped with nothing published (the checkpoints stay for ``--resume`` with a lower learning
  rate). The trainer logs every step's loss as computed (transformers' NaN filter, which would
  replace it with the running mean, is off), so the logged mean shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from transformers import EarlyStoppingCallback, TrainerCallback

from ragtune.card import CardWarning
from ragtune.errors import RagtuneError
from trainer.config import MLP_PROJECTIONS, TrainConfig

MEMORISING_LOSS = 0.2
REGULAR_TARGET_FACTOR = 1.5  # eval loss below 0.3 as well: the memorising warning says so
OVERFIT_RISES = 2
PLATEAU_WINDOW = 5
PLATEAU_SPREAD = 0.02
PLATEAU_LOSS = 1.0
SMALL_SET = 500  # examples; below this, low ranks and dropout matter more


class GradientError(RagtuneError):
    """LoRA gradients are zero or not finite, or the loss is not: training would learn nothing."""


def static_checks(config: TrainConfig, n_train: int) -> list[CardWarning]:
    """Warnings about the recipe itself, before any compute is spent."""
    warnings: list[CardWarning] = []
    targets = set(config.target_modules)
    missing_mlp = [m for m in MLP_PROJECTIONS if m not in targets]
    if missing_mlp:
        warnings.append(CardWarning(
            code="mlp-not-targeted",
            message=f"target_modules skips the MLP projection(s) {', '.join(missing_mlp)}: attention-only LoRA "
            "learns formats and voices markedly worse; target all seven projections.",
        ))
    if config.lora_r < 8:
        warnings.append(CardWarning(
            code="rank-low",
            message=f"lora_r={config.lora_r} is below 8: too little capacity for most formats; use 16.",
        ))
    if config.lora_dropout > 0.1 and n_train < SMALL_SET:
        warnings.append(CardWarning(
            code="dropout-high",
            message=f"lora_dropout={config.lora_dropout} on {n_train} training examples slows learning more "
            "than it regularises; use 0-0.05 (early stopping guards against overfitting).",
        ))
    if config.epochs > 3 and config.max_steps is None:
        warnings.append(CardWarning(
            code="epochs-high",
            message=f"epochs={config.epochs}: beyond 3 epochs adapters usually memorise; 1-3 is the useful range.",
        ))
    if config.lora_alpha < config.lora_r / 2:
        warnings.append(CardWarning(
            code="alpha-low",
            message=f"lora_alpha={config.lora_alpha} with lora_r={config.lora_r} scales the update by "
            f"{config.lora_alpha / config.lora_r:.2f}: learning will be slow; alpha = r is the usual choice.",
        ))
    if n_train < 50:
        warnings.append(CardWarning(
            code="few-examples",
            message=f"only {n_train} training examples: expect memorisation; a few hundred is a sensible minimum.",
        ))
    return warnings


class GuardrailCallback(TrainerCallback):
    """Records train/eval losses by step and raises guardrail warnings as training goes.

    Each code fires at most once per run. ``on_warning`` is called for each new warning (the
    trainer prints it); all are kept in ``self.warnings`` for the card.
    """

    def __init__(self, on_warning: Callable[[CardWarning], None] | None = None, *, lora_r: int = 16):
        self.on_warning = on_warning
        self.lora_r = lora_r
        self.train_losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.warnings: list[CardWarning] = []
        self.first_grad_norm: float | None = None

    # --- events

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs and not _finite(logs["loss"]):
            self._warn("loss-not-finite", f"training loss is {logs['loss']} by step {state.global_step}: the LoRA "
                       "weights have diverged. Lower learning_rate (or max_grad_norm) and train again.",
                       state.global_step)
            raise GradientError(self.warnings[-1].message)
        if "loss" in logs:
            self.record_train(state.global_step, float(logs["loss"]))
        if "eval_loss" in logs and _finite(logs["eval_loss"]):
            self.record_eval(state.global_step, float(logs["eval_loss"]))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # Only the first step of this process: enough to catch a broken setup, and cheap.
        if self.first_grad_norm is not None or model is None:
            return
        norm = lora_grad_norm(model)
        self.first_grad_norm = norm
        if norm is None:
            return
        if norm == 0.0 or not math.isfinite(norm):
            self._warn("lora-grad-zero", f"LoRA gradient norm is {norm} at the first optimizer step: the adapter "
                       "cannot learn. On CPU never evaluate a 4-bit model before training; check that the "
                       "LoRA weights require grad.", state.global_step + 1)
            raise GradientError(self.warnings[-1].message)

    # --- the rules (public so unit tests can drive them with plain numbers)

    def record_train(self, step: int, loss: float) -> None:
        self.train_losses.append((step, loss))
        if loss < MEMORISING_LOSS:
            message = (f"training loss {loss:.3f} < {MEMORISING_LOSS}: the adapter is memorising its training rows; "
                       "use fewer epochs, a lower learning rate or more data.")
            if self.eval_losses and self.eval_losses[-1][1] < MEMORISING_LOSS * REGULAR_TARGET_FACTOR:
                # Held-out rows fit about as well: a very regular target (a JSON format), not recall.
                message += (f" But the latest eval loss is {self.eval_losses[-1][1]:.3f}: held-out rows fit almost as "
                            "well, so the target may simply be very regular (a format); judge by the task metric.")
            self._warn("memorising", message, step)
        self._check_plateau(step)

    def record_eval(self, step: int, loss: float) -> None:
        self.eval_losses.append((step, loss))
        self._check_overfitting(step)

    def _check_plateau(self, step: int) -> None:
        if len(self.train_losses) < PLATEAU_WINDOW:
            return
        window = [loss for _, loss in self.train_losses[-PLATEAU_WINDOW:]]
        mean = sum(window) / len(window)
        spread = (max(window) - min(window)) / mean
        if mean > PLATEAU_LOSS and spread <= PLATEAU_SPREAD:
            hint = "raise lora_r to 32 or 64" if self.lora_r < 64 else "check the learning rate and the data"
            self._warn("plateau-high", f"training loss has plateaued at {mean:.3f} (last {PLATEAU_WINDOW} logs within "
                       f"{spread:.1%}): the adapter may lack capacity; {hint}.", step)

    def _check_overfitting(self, step: int) -> None:
        if len(self.eval_losses) < OVERFIT_RISES + 1:
            return
        recent = self.eval_losses[-(OVERFIT_RISES + 1):]
        rising = all(b[1] > a[1] for a, b in zip(recent, recent[1:], strict=False))
        start, end = recent[0][0], recent[-1][0]
        before = [loss for s, loss in self.train_losses if s <= start]
        after = [loss for s, loss in self.train_losses if start < s <= end]
        train_falling = bool(before and after) and min(after) < before[-1]
        if rising and train_falling:
            self._warn("overfitting", f"eval loss rose {OVERFIT_RISES} evals in a row ({recent[0][1]:.3f} -> "
                       f"{recent[-1][1]:.3f}) while training loss fell: overfitting; the best checkpoint is kept.",
                       step)

    def _warn(self, code: str, message: str, step: int | None) -> None:
        if any(w.code == code for w in self.warnings):
            return
        warning = CardWarning(code=code, message=message, step=step)
        self.warnings.append(warning)
        if self.on_warning is not None:
            self.on_warning(warning)


def lora_grad_norm(model) -> float | None:
    """L2 norm of all LoRA parameter gradients (None when the model has no LoRA gradients yet).

    Called from ``on_pre_optimizer_step``, i.e. after clipping to ``max_grad_norm``: a healthy
    first step often reads exactly the clip norm; what matters is that it is not zero.
    """
    total = 0.0
    seen = False
    for name, param in model.named_parameters():
        if "lora_" in name and param.requires_grad and param.grad is not None:
            total += float(param.grad.detach().float().pow(2).sum())
            seen = True
    return math.sqrt(total) if seen else None


def early_stopping_callbacks(config: TrainConfig, eval_during_training: bool) -> list[TrainerCallback]:
    """EarlyStoppingCallback when eval runs in the loop (needs load_best_model_at_end, set by train.py)."""
    if config.early_stopping_patience is None or not eval_during_training:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)]


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
