"""Build the shipped training sets from the vendored data (deterministic; re-run to reproduce).

    python data/train/build.py

Writes JSONL that ``ragtune train-adapter`` reads as is:
  e2e-json.jsonl   format set: restaurant sentence -> compact JSON of its slots
  bible-asv.jsonl  voice set: a Bible in Basic English verse -> the same verse in ASV (1901)
  reader.jsonl     grounded reading (RAFT-style, chat format): question + retrieved passages ->
                   a short answer citing [n], or "not in the passages"
Only the vendored *train* splits are used, so the vendored test splits stay unseen for eval/.
``python data/train/build.py reader`` rebuilds one set (the reader set embeds ~1,000 passages).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent
sys.path.insert(0, str(DATA.parent))  # the repository root, for the reader set's retriever and prompt
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


# The reader (RAFT: Zhang et al. 2024): each TimeQA train question with the passages ragtune's own
# retriever returns for it from the train pages. In READER_GOLD_P of the answerable questions the
# answer-bearing passage is among them (put in at a random place if retrieval missed it) and the
# answer cites it; in the rest it is taken out and the answer is NO_ANSWER, as for the questions
# TimeQA marks unanswerable. Varying k and order keeps the reader from trusting a position.
READER_VARIANTS = 2
READER_K = (2, 3, 4, 5)
READER_GOLD_P = 0.85
READER_MAX_WORDS = 600  # passages per prompt, so prompt + answer fit the recipe's max_seq_length


def _reader_corpus(rows: list[dict]):
    """Every distinct train paragraph the questions point at, as Documents (one per paragraph id)."""
    from retriever.models import Document

    docs: dict[str, Document] = {}
    for r in rows:
        for pid, text in zip(r["passage_ids"], r["passages"]):
            if pid not in docs and len(text.split()) >= 3:
                docs[pid] = Document(id=pid, text=text, source=" ".join(r["title"].split()))
    return list(docs.values())


def _answer_chunk(passages, answers: list[str]) -> tuple[int, str] | None:
    """(index, answer) of the first passage holding one of the gold answers, as a whole-word span."""
    from ragtune.textnorm import normalize_answer

    for i, p in enumerate(passages):
        text = f" {normalize_answer(p.text)} "
        for a in answers:
            if normalize_answer(a) and f" {normalize_answer(a)} " in text:
                return i, a
    return None


def _fit(passages, keep: int | None) -> list:
    """Drop passages from the end (never the kept one) until the words fit READER_MAX_WORDS."""
    out = list(passages)
    while sum(len(p.text.split()) for p in out) > READER_MAX_WORDS and len(out) > 1:
        drop = max(i for i in range(len(out)) if out[i] is not keep)
        out.pop(drop)
    return out


def build_reader() -> list[dict]:
    from ragtune.settings import Settings
    from ragtune.textnorm import NO_ANSWER
    from retriever.store import FactStore
    from router.prompt import instruction_chat
    from router.schemas import ChatMessage

    rows = _read(DATA / "timeqa_human" / "train.jsonl")
    rng = random.Random(SEED)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = FactStore(Settings(home=Path(tmp), chroma_path=Path(tmp) / "chroma"))
        store.upsert(_reader_corpus(rows), collection="reader-train", show_progress=True)
        for r in rows:
            gold_ids = set(r["passage_ids"])
            answers = [a for a in r["answers"] if a.strip()]
            found = store.search(r["question"], k=12, collection="reader-train")
            on_gold_page = [p for p in found if p.doc_id in gold_ids]
            # The answer the gold passage holds: a question with several annotated answers may find
            # the second one there (the shipped file predates this: see data/train/SOURCE.md).
            at = _answer_chunk(on_gold_page, answers)
            gold, answer_text = (on_gold_page[at[0]], at[1]) if at is not None else (None, None)
            # A distractor that happens to contain the answer string would make NO_ANSWER a lie.
            distractors = [p for p in found if p.doc_id not in gold_ids and _answer_chunk([p], answers) is None]
            for _ in range(READER_VARIANTS):
                k = rng.choice(READER_K)
                if gold is not None and rng.random() < READER_GOLD_P:
                    passages = [p for p in found[:k] if p is gold or p in distractors]
                    if gold not in passages:
                        passages = distractors[: k - 1]
                        passages.insert(rng.randrange(len(passages) + 1), gold)
                    else:
                        rng.shuffle(passages)
                    passages = _fit(passages, gold)
                    answer = f"{answer_text} [{passages.index(gold) + 1}]"
                else:
                    passages = _fit(distractors[:k], None)
                    answer = NO_ANSWER
                chat = instruction_chat([ChatMessage(role="user", content=r["question"])], passages)
                row = {"messages": [*chat, {"role": "assistant", "content": answer}]}
                if row not in out[-READER_VARIANTS:]:  # two draws can give the same prompt
                    out.append(row)
    return out


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


BUILDERS = {"e2e-json": build_format, "bible-asv": build_voice, "reader": build_reader}


def main(names: list[str] | None = None) -> None:
    for name in names or list(BUILDERS):
        if name not in BUILDERS:
            raise SystemExit(f"unknown set {name!r}: choose from {', '.join(BUILDERS)}")
        _write(HERE / f"{name}.jsonl", BUILDERS[name]())


if __name__ == "__main__":
    main(sys.argv[1:])
