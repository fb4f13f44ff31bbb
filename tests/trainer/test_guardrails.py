"""Guardrails: static recipe warnings and the loss-curve rules (pure logic, driven with numbers)."""

from __future__ import annotations

from trainer.config import TrainConfig
from trainer.guardrails import (
    MEMORISING_LOSS,
    GuardrailCallback,
    early_stopping_callbacks,
    static_checks,
)


def codes(warnings):
    return [w.code for w in warnings]


def test_mlp_target_warning_fires_when_mlp_projections_are_skipped():
    attention_only = TrainConfig(style="s", data="d", target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    warnings = static_checks(attention_only, n_train=800)
    assert codes(warnings) == ["mlp-not-targeted"]
    assert "gate_proj, up_proj, down_proj" in warnings[0].message
    assert warnings[0].step is None
    assert static_checks(TrainConfig(style="s", data="d"), n_train=800) == []


def test_low_rank_high_dropout_many_epochs_few_examples():
    config = TrainConfig(style="s", data="d", lora_r=4, lora_alpha=4, lora_dropout=0.3, epochs=5)
    assert set(codes(static_checks(config, n_train=20))) == {"rank-low", "dropout-high", "epochs-high", "few-examples"}
    # dropout matters for small sets only
    assert "dropout-high" not in codes(static_checks(config, n_train=5000))


def test_memorising_fires_once_below_threshold():
    seen = []
    guard = GuardrailCallback(seen.append)
    for step, loss in enumerate([2.0, 0.9, 0.35, MEMORISING_LOSS - 0.05, 0.1], start=1):
        guard.record_train(step, loss)
    assert codes(guard.warnings) == ["memorising"]
    assert guard.warnings[0].step == 4
    assert "task metric" not in guard.warnings[0].message  # no eval loss yet: plain memorisation warning
    assert seen == guard.warnings


def test_memorising_notes_a_regular_target_when_eval_loss_is_as_low():
    guard = GuardrailCallback()
    guard.record_eval(10, 0.16)
    guard.record_train(12, 0.15)
    assert codes(guard.warnings) == ["memorising"] and "eval loss is 0.160" in guard.warnings[0].message
    far = GuardrailCallback()
    far.record_eval(10, 1.2)  # held-out rows fit much worse: plain memorisation
    far.record_train(12, 0.15)
    assert "task metric" not in far.warnings[0].message


def test_overfitting_needs_two_rising_evals_while_train_falls():
    guard = GuardrailCallback()
    for step, loss in [(10, 1.5), (20, 1.2), (30, 0.9), (40, 0.7)]:
        guard.record_train(step, loss)
    guard.record_eval(10, 1.30)
    guard.record_eval(20, 1.35)
    assert guard.warnings == []  # one rise is noise
    guard.record_eval(30, 1.40)
    assert codes(guard.warnings) == ["overfitting"]
    assert guard.warnings[0].step == 30


def test_rising_eval_with_rising_train_is_not_overfitting():
    guard = GuardrailCallback()
    for step, loss in [(10, 1.0), (20, 1.1), (30, 1.2)]:
        guard.record_train(step, loss)
        guard.record_eval(step, loss + 0.2)
    assert "overfitting" not in codes(guard.warnings)


def test_plateau_high_hints_a_larger_rank():
    guard = GuardrailCallback(lora_r=16)
    for step, loss in enumerate([2.0, 1.51, 1.50, 1.49, 1.50, 1.505], start=1):
        guard.record_train(step, loss)
    assert codes(guard.warnings) == ["plateau-high"]
    assert "raise lora_r to 32 or 64" in guard.warnings[0].message


def test_healthy_curve_raises_nothing():
    guard = GuardrailCallback()
    for step, loss in enumerate([2.5, 2.0, 1.6, 1.3, 1.1, 0.9, 0.8, 0.7], start=1):
        guard.record_train(step, loss)
        guard.record_eval(step, loss + 0.1)
    assert guard.warnings == []


def test_on_log_reads_trainer_logs():
    from types import SimpleNamespace

    guard = GuardrailCallback()
    state = SimpleNamespace(global_step=3)
    guard.on_log(None, state, None, logs={"loss": 0.1, "learning_rate": 1e-4})
    guard.on_log(None, state, None, logs={"eval_loss": 0.5})
    assert guard.train_losses == [(3, 0.1)] and guard.eval_losses == [(3, 0.5)]


def test_a_loss_that_is_not_finite_stops_training_with_a_named_error():
    """transformers' NaN filter is off in the trainer, so a diverged step reaches the log."""
    from types import SimpleNamespace

    import pytest

    from ragtune.errors import RagtuneError
    from trainer.guardrails import GradientError

    guard = GuardrailCallback()
    guard.on_log(None, SimpleNamespace(global_step=10), None, logs={"loss": 2.0})
    with pytest.raises(GradientError, match="training loss is nan by step 20.*Lower learning_rate") as raised:
        guard.on_log(None, SimpleNamespace(global_step=20), None, logs={"loss": float("nan")})
    assert isinstance(raised.value, RagtuneError)  # the CLI prints the message, not a traceback
    assert codes(guard.warnings) == ["loss-not-finite"] and guard.warnings[0].step == 20
    assert guard.train_losses == [(10, 2.0)]


def test_early_stopping_only_with_in_loop_eval():
    config = TrainConfig(style="s", data="d", early_stopping_patience=2)
    (callback,) = early_stopping_callbacks(config, eval_during_training=True)
    assert callback.early_stopping_patience == 2
    assert early_stopping_callbacks(config, eval_during_training=False) == []
    assert early_stopping_callbacks(TrainConfig(style="s", data="d", early_stopping_patience=None), True) == []
