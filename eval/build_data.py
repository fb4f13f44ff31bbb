"""Build the constructed eval suites in data/eval/ (deterministic; re-run to reproduce byte for byte).

    python -m eval.build_data

changing_facts.jsonl   invented entities whose attribute changes from a v1 to a v2 value
hybrid_restaurants.jsonl  E2E test rows with the restaurant renamed to a unique invented name
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "data" / "eval"
E2E_TEST = REPO / "data" / "e2e_cleaned_text2json" / "test.jsonl"
HYBRID_ROWS = 200
SEED = 13

# (entity, attribute, wh-word, v1, v2). Every name and value is invented: no model can know them
# from pretraining, so the only sources are the store (v1 then v2) and the adapter (v1).
FACTS: list[tuple[str, str, str, str, str]] = [
    ("Quillmore Robotics", "chief executive", "Who", "Mara Ilves", "Tobias Renwick"),
    ("the Harrowgate Rowing Club", "head coach", "Who", "Edda Sorvik", "Lionel Basquith"),
    ("the Veltrane Observatory", "director", "Who", "Piet Langmor", "Saskia Odelund"),
    ("Brindleford", "mayor", "Who", "Colm Ardery", "Yusra Pellinore"),
    ("the Oskarveld Symphony", "principal conductor", "Who", "Ivo Drummelin", "Tamsin Qorvath"),
    ("Fenwick & Tallis Bank", "chair of the board", "Who", "Ruth Kellaway", "Anselm Virtanov"),
    ("the Corvale Gazette", "editor-in-chief", "Who", "Dario Penhallow", "Mirela Ostby"),
    ("Lunquist Pharmaceuticals", "head of research", "Who", "Greta Halloran", "Bastien Murrow"),
    ("the Tessaly Institute", "president", "Who", "Oren Fasbinder", "Clio Wetherell"),
    ("the Marrowby Hospital", "chief surgeon", "Who", "Hana Trevelyan", "Jorund Ekwall"),
    ("Pelloway Airlines", "chief pilot", "Who", "Marten Sjoqvist", "Ada Kirrane"),
    ("the Glassmere Museum", "curator", "Who", "Ines Calloway", "Rafe Dunmarrow"),
    ("Oldcastle United", "team captain", "Who", "Kofi Brennagh", "Lars Wennerholm"),
    ("the Ashvale Library", "head librarian", "Who", "Nora Pemberton", "Emil Radacek"),
    ("Zentrix Software", "chief technology officer", "Who", "Priya Ostrander", "Hugo Blaylock"),
    ("Quillmore Robotics", "headquarters city", "What", "Drennick", "Port Salvane"),
    ("the Harrowgate Rowing Club", "home river", "What", "the Ousel", "the Marrendale"),
    ("Brindleford", "twin town", "What", "Kelvaro", "Santo Irmel"),
    ("the Oskarveld Symphony", "concert hall", "What", "the Amberline Hall", "the Castellan Rotunda"),
    ("Fenwick & Tallis Bank", "stock ticker", "What", "FNTB", "FTQX"),
    ("the Corvale Gazette", "publishing day", "What", "Tuesday", "Saturday"),
    ("Lunquist Pharmaceuticals", "flagship drug", "What", "Velorazine", "Quintabrex"),
    ("the Tessaly Institute", "motto", "What", "Lumen in tenebris", "Semper ulterius"),
    ("Pelloway Airlines", "hub airport", "What", "Grisholm Field", "Ostravel International"),
    ("the Glassmere Museum", "star exhibit", "What", "the Thorncombe Astrolabe", "the Ivory Ledger"),
    ("Oldcastle United", "stadium", "What", "Fallow Park", "the Brackenridge Arena"),
    ("Zentrix Software", "main product", "What", "Zentrix Ledger", "Zentrix Orbit"),
    ("the Veltrane Observatory", "largest telescope", "What", "the Halvard Reflector", "the Sunniva Array"),
    ("the Marrowby Hospital", "official colour", "What", "teal", "crimson"),
    ("the Ashvale Library", "rarest book", "What", "the Calder Psalter", "the Wrenfield Codex"),
]

# Syllables for invented restaurant names: two or three of them, title-cased, never a real E2E name.
_SYLLABLES = ["bel", "cor", "dra", "fen", "gal", "hol", "iv", "jas", "kel", "lum", "mor", "nav", "ost", "pel",
              "quin", "ros", "sal", "tav", "ul", "ver", "wen", "yor", "zan", "bri", "cal", "dun"]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def changing_facts() -> list[dict]:
    rows = []
    for i, (entity, attribute, wh, v1, v2) in enumerate(FACTS):
        subject = f"the {attribute} of {entity}"
        rows.append({
            "id": f"fact-{i:03d}",
            "entity": entity,
            "attribute": attribute,
            "question": f"{wh} is the {attribute} of {entity}?",
            "v1": v1,
            "v2": v2,
            "v1_text": f"As of March 2023, {subject} is {v1}.",
            "v2_text": f"Since June 2025, {subject} is {v2}.",
            "v1_statement": f"{_cap(subject)} is {v1}.",
        })
    return rows


def _invent_names(n: int, taken: set[str], rng: random.Random) -> list[str]:
    names: list[str] = []
    seen = {t.lower() for t in taken}
    while len(names) < n:
        parts = rng.sample(_SYLLABLES, rng.choice([2, 3]))
        name = _cap("".join(parts)) + rng.choice([" House", " Table", " Kitchen", "", " Rooms", " Grill"])
        if name.lower() not in seen:
            seen.add(name.lower())
            names.append(name)
    return names


def hybrid_restaurants() -> list[dict]:
    rows = [json.loads(line) for line in E2E_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    # Only rows that name the restaurant verbatim can be renamed everywhere it occurs.
    usable = [r for r in rows if r["output_json"].get("name") and r["output_json"]["name"] in r["input"]]
    rng = random.Random(SEED)
    picked = sorted(rng.sample(range(len(usable)), HYBRID_ROWS))
    real_names = {r["output_json"].get("name", "") for r in rows} | {r["output_json"].get("near", "") for r in rows}
    names = _invent_names(HYBRID_ROWS, real_names, rng)
    out = []
    for i, (idx, new_name) in enumerate(zip(picked, names)):
        row = usable[idx]
        old = row["output_json"]["name"]
        text = re.sub(re.escape(old), new_name, row["input"])
        gold = dict(row["output_json"], name=new_name)
        out.append({
            "id": f"hybrid-{i:03d}",
            "source_id": row["id"],
            "name": new_name,
            "original_name": old,
            "input": text,
            "output_json": gold,
        })
    return out


def _write(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    _write(OUT / "changing_facts.jsonl", changing_facts())
    _write(OUT / "hybrid_restaurants.jsonl", hybrid_restaurants())


if __name__ == "__main__":
    main()
