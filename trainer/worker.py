"""One process of a multi-GPU run: ``accelerate launch -m trainer.worker SPEC`` (see trainer.distributed)."""

from __future__ import annotations

import sys
from pathlib import Path

from trainer.distributed import Rank, read_spec
from trainer.train import train_adapter


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m trainer.worker SPEC.json (written by `ragtune train-adapter --gpus N`)", file=sys.stderr)
        return 2
    config, settings = read_spec(Path(argv[0]))
    train_adapter(config, settings, progress=Rank.from_env().is_main)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
