"""Engine output goes to a file, so a command prints only its own progress and result.

vLLM's engine runs in processes it spawns; they print warnings, progress bars and log lines
straight to the stdout/stderr they inherit. :func:`process_output_to` points this process's
file descriptors 1 and 2 at the log file while the engine starts, so those processes keep the
file for good, and ``VLLM_LOGGING_CONFIG_PATH`` sends this process's own vLLM log lines there too.
A command opts in with :func:`with_engine_log` (``settings.engine_log``); the library never
redirects on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ragtune.settings import Settings


def with_engine_log(settings: Settings, name: str) -> Settings:
    """``settings`` with the engine's output going to ``HOME/logs/<name>.log`` (emptied first)."""
    path = (settings.home / "logs" / f"{name}.log").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")  # one run per file: the file says what this run did
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "plain"}},
        "loggers": {"vllm": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }
    config_path = path.with_suffix(".logging.json")
    config_path.write_text(json.dumps(config))
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_path)
    # vLLM's import-time warnings come before its logging config applies: they reach the file too.
    vllm_logger = logging.getLogger("vllm")
    vllm_logger.addHandler(logging.FileHandler(path))
    vllm_logger.propagate = False
    return settings.model_copy(update={"engine_log": path})


@contextlib.contextmanager
def process_output_to(path: Path | None) -> Iterator[None]:
    """Send file descriptors 1 and 2 to ``path`` inside the block (no-op for None).

    Processes started inside the block inherit the file and keep writing there afterwards.
    """
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)
