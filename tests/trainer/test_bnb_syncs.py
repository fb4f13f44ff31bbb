"""The trainer drops bitsandbytes' per-parameter device syncs only for the training call."""

import pytest

from trainer.train import bnb_steps_without_syncs

bnb_optimizer = pytest.importorskip("bitsandbytes.optim.optimizer")


def test_sync_is_dropped_inside_and_restored_after():
    original = bnb_optimizer.sync_gpu
    with bnb_steps_without_syncs():
        assert bnb_optimizer.sync_gpu is not original
        assert bnb_optimizer.sync_gpu(object()) is None  # no device sync, whatever the tensor
    assert bnb_optimizer.sync_gpu is original


def test_sync_is_restored_when_training_fails():
    original = bnb_optimizer.sync_gpu
    with pytest.raises(RuntimeError, match="step failed"), bnb_steps_without_syncs():
        raise RuntimeError("step failed")
    assert bnb_optimizer.sync_gpu is original

