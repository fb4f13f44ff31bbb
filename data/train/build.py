"""Build the shipped training sets from the vendored data (deterministic; re-run to reproduce).

    python data/train/build.py

Writes prompt/completion JSONL that ``ragtune train-adapter`` reads as is:
  e2e-json.jsonl   format set: restaurant sentence -> compact JSON of its slots
  bible-asv.jsonl  voice set: a Bible in Basic English verse -> the same verse in ASV (1901)
Only the vendored *train* splits are used, so the vendored test splits stay unseen for eval/.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent
VOICE_ROWS = 800  # a register shift shows in a few hundred verses
SEED = 13

FORMAT_INSTRUCTION = (
    "Extract the restaurant's attributes from the description as compact JSON. Use only the keys the text "
    "supports, from: name, eatType, food, priceRange, customer rating, area, familyFriendly, near."
)
VOICE_INSTRUCTION = "Rewrite this Bible verse in the style of the American Standard Version (1901)."


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _sample(rows: list[dict], n: int) -> list[dict]:
    picked = random.Random(SEED).sample(range(len(rows)), n)
    return [rows[i] for i in sorted(picked)]  # keep the source order: diffs stay readable


def build_format() -> list[dict]:
    # Every vendored train row: 800 taught the JSON layout but not the value vocabulary (the first
    # adapter invented keys and values; see BENCHMARKS.md), and the closed vocabulary needs coverage.
    rows = _read(DATA / "e2e_cleaned_text2json" / "train.jsonl")
    return [
        {
            "prompt": f"{FORMAT_INSTRUCTION}\n\n{r['input']}",
            "completion": json.dumps(r["output_json"], ensure_ascii=False, separators=(",", ":")),
        }
        for r in rows
    ]


def build_voice() -> list[dict]:
    rows = _sample(_read(DATA / "bible_bbe2asv" / "train.jsonl"), VOICE_ROWS)
    return [{"prompt": f"{VOICE_INSTRUCTION}\n\n{r['source_text']}", "completion": r["target_text"]} for r in rows]


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    _write(HERE / "e2e-json.jsonl", build_format())
    _write(HERE / "bible-asv.jsonl", build_voice())


if __name__ == "__main__":
    main()
