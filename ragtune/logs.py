"""Engine logs go to a file, so a command prints only its own progress and result.

vLLM logs through its own logger in this process and in the engine processes it spawns; those
read ``VLLM_LOGGING_CONFIG_PATH`` when they start, so setting it before the engine starts sends
every process's engine log to one file (``HOME/logs/<name>.log``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ragtune.settings import Settings


def engine_log_path(settings: Settings, name: str) -> Path:
    return settings.home / "logs" / f"{name}.log"


def engine_logs_to(settings: Settings, name: str) -> Path:
    """Route vLLM's logs (this process and its engine processes) to ``HOME/logs/<name>.log``; returns it."""
    path = engine_log_path(settings, name).resolve()
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
    return path
