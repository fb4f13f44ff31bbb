"""Small builders shared by the trainer tests."""

from __future__ import annotations

import json
from pathlib import Path

# Short prompts and JSON completions: a few tokens each, so CPU steps stay cheap.
NAMES = ["Alimentum", "Aromi", "Bibimbap", "Cotto", "Zizzi", "Wildwood", "Loch Fyne", "Strada"]


def write_jsonl(path: Path, records) -> Path:
    """Write records (dicts, or raw strings for deliberately broken lines) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def json_rows(n: int) -> list[dict]:
    return [{"prompt": f"Restaurant: {name}.", "completion": json.dumps({"name": name})} for name in NAMES[:n]]
