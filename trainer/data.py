"""Training data: read the formats people have, validate every record, render prompts.

Three formats, detected per file (one format per file):

* chat JSONL (OpenAI): ``{"messages": [{"role": ..., "content": ...}, ...]}`` — the last message
  must be the assistant's and is the completion; everything before it is the prompt;
* prompt/completion JSONL: ``{"prompt": "...", "completion": "..."}``;
* Alpaca: ``{"instruction": "...", "input": "...", "output": "..."}`` as JSONL or a JSON array.

Every record is checked before anything else happens; problems name file and line
(``data.jsonl:17: missing 'completion'``) and up to :data:`MAX_PROBLEMS` are reported in one
:class:`InvalidRequestError`, so nothing is ever trained on a file with bad lines.

Prompts are rendered to text here — with the tokenizer's chat template when the base model has one,
else with :data:`ragtune.templates.PLAIN_TEMPLATE` — and the router must render them the same way at inference:
use :func:`render_prompt` / :func:`render_messages`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtune.errors import InvalidRequestError
from ragtune.jsonformat import Validator, parse_strict
from ragtune.templates import render_messages

Format = Literal["chat", "prompt-completion", "alpaca"]
MAX_PROBLEMS = 20
ROLES = {"system", "developer", "user", "assistant"}

# The plain template for base models without a chat template (Alpaca-style headers). Training and
# inference must agree byte for byte, or the adapter sees prompts it never learned from.


@dataclass
class Example:
    """One validated record: the prompt (text or chat messages) and the completion text."""

    prompt: str | list[dict[str, str]]
    completion: str
    line: int


@dataclass
class TrainingFile:
    path: Path
    format: Format
    sha256: str
    examples: list[Example]

    @property
    def rows_total(self) -> int:
        return len(self.examples)


@dataclass
class PreparedData:
    """Rendered examples ready for trl, split into train and held-out rows."""

    train_rows: list[dict[str, str]]
    eval_rows: list[dict[str, str]]
    rejected: list[str] = field(default_factory=list)  # "data.jsonl:12: duplicate of line 3", ...

    def longest_tokens(self, tokenizer) -> int:
        """Tokens in the longest training row (prompt + completion), before truncation."""
        texts = [r["prompt"] + r["completion"] for r in self.train_rows]
        return max((len(ids) for ids in tokenizer(texts)["input_ids"]), default=0)

    def datasets(self):
        from datasets import Dataset

        return Dataset.from_list(self.train_rows), Dataset.from_list(self.eval_rows)


# ---------------------------------------------------------------------------------------------
# Reading and validating


class _Problems:
    """Collects 'file:line: message' strings; raises them together at the end."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[str] = []
        self.count = 0

    def add(self, line: int | None, message: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            where = f"{self.path.name}:{line}" if line is not None else self.path.name
            self.items.append(f"{where}: {message}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        more = f"\n  ... and {self.count - len(self.items)} more" if self.count > len(self.items) else ""
        noun = "problem" if self.count == 1 else "problems"
        raise InvalidRequestError(
            f"{self.path}: {self.count} {noun}; nothing was trained. Fix these lines:\n  "
            + "\n  ".join(self.items)
            + more,
            param="data",
            code="invalid_training_data",
        )


def load_training_file(path: Path) -> TrainingFile:
    """Read and validate a training file; raise InvalidRequestError listing every bad line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRequestError(f"Training data {path} does not exist", param="data")
    raw = path.read_bytes()
    problems = _Problems(path)
    records = _parse_records(raw, path, problems)
    file_format: Format | None = None
    first_line = 0
    examples: list[Example] = []
    for line, record in records:
        kind = _detect(record)
        if kind is None:
            problems.add(line, f"unknown record format (keys: {sorted(record)}); expected 'messages', "
                               "'prompt'+'completion' or 'instruction'+'output'")
            continue
        if file_format is None:
            file_format, first_line = kind, line
        elif kind != file_format:
            problems.add(line, f"{kind} record in a {file_format} file (format set by line {first_line}); "
                               "use one format per file")
            continue
        example = _VALIDATORS[kind](record, line, problems)
        if example is not None:
            examples.append(example)
    if not records and not problems.count:
        problems.add(None, "no records (the file is empty)")
    problems.raise_if_any()
    assert file_format is not None
    return TrainingFile(path, file_format, hashlib.sha256(raw).hexdigest(), examples)


def check_completions_schema(data: TrainingFile, schema: Validator, schema_path: Path) -> None:
    """Every completion must be JSON that satisfies the format's schema; else list the bad lines.

    A format adapter learns exactly what its completions show, so one off-schema label teaches
    the model to break the format it exists to keep.
    """
    problems = _Problems(data.path)
    for example in data.examples:
        value = parse_strict(example.completion)
        if value is None:
            problems.add(example.line, "completion is not one JSON object or array")
        elif errors := schema(value):
            problems.add(example.line, f"completion breaks {schema_path.name}: {errors[0]}")
    problems.raise_if_any()


def _parse_records(raw: bytes, path: Path, problems: _Problems) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.add(line, f"not UTF-8 ({exc.reason})")
        problems.raise_if_any()
    # A JSON array (the original Alpaca release is one): "line" is then the item number.
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return _parse_array(text, problems)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (a trailing newline, a separator) carry no record
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.add(number, f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            problems.add(number, f"expected a JSON object, got {type(record).__name__}")
            continue
        records.append((number, record))
    return records


def _parse_array(text: str, problems: _Problems) -> list[tuple[int, dict[str, Any]]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.add(exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})")
        problems.raise_if_any()
    records = []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            records.append((number, item))
        else:
            problems.add(number, f"item {number}: expected a JSON object, got {type(item).__name__}")
    return records


def _detect(record: dict[str, Any]) -> Format | None:
    if "messages" in record:
        return "chat"
    if "prompt" in record or "completion" in record:
        return "prompt-completion"
    if "instruction" in record or "output" in record:
        return "alpaca"
    return None


def _text(record: dict[str, Any], key: str, line: int, problems: _Problems, *, required: bool = True) -> str | None:
    if key not in record:
        if required:
            problems.add(line, f"missing '{key}'")
        return None
    value = record[key]
    if not isinstance(value, str):
        problems.add(line, f"'{key}' must be a string, got {type(value).__name__}")
        return None
    if required and not value.strip():
        problems.add(line, f"'{key}' is empty")
        return None
    return value


def _prompt_completion(record: dict[str, Any], line: int, problems: _Problems) -> Example | None:
    prompt = _text(record, "prompt", line, problems)
    completion = _text(record, "completion", line, problems)
    if prompt is None or completion is None:
        return None
    return Example(prompt, completion, line)


def _alpaca(record: dict[str, Any], line: int, problems: _Problems) -> Example | None:
    instruction = _text(record, "instruction", line, problems)
    extra = _text(record, "input", line, problems, required=False)
    output = _text(record, "output", line, problems)
    if instruction is None or output is None:
        return None
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return Example(prompt, output, line)


def _chat(record: dict[str, Any], line: int, problems: _Problems) -> Example | None:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        problems.add(line, "'messages' must be a non-empty list")
        return None
    clean: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.add(line, f"messages[{i}] must be an object with 'role' and 'content'")
            return None
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.add(line, f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}")
            return None
        if not isinstance(content, str):
            problems.add(line, f"messages[{i}].content must be a string, got {type(content).__name__}")
            return None
        clean.append({"role": "system" if role == "developer" else role, "content": content})
    if clean[-1]["role"] != "assistant":
        problems.add(line, f"the last message must be the assistant's (the completion), got {clean[-1]['role']!r}")
        return None
    if not clean[-1]["content"].strip():
        problems.add(line, "the last (assistant) message is empty")
        return None
    if not any(m["role"] == "user" for m in clean[:-1]):
        problems.add(line, "no user message before the assistant's")
        return None
    return Example(clean[:-1], clean[-1]["content"], line)


_VALIDATORS = {"chat": _chat, "prompt-completion": _prompt_completion, "alpaca": _alpaca}


# ---------------------------------------------------------------------------------------------
# Rendering prompts (shared with inference)


def render_prompt(prompt_text: str, tokenizer) -> str:
    """Render one user prompt as the adapter's training prompt (see :func:`render_messages`)."""
    return render_messages([{"role": "user", "content": prompt_text}], tokenizer)


def render_example(example: Example, tokenizer) -> dict[str, str]:
    """One trl prompt/completion row. The completion ends with EOS so the adapter learns to stop."""
    if isinstance(example.prompt, list):
        prompt = render_messages(example.prompt, tokenizer)
    else:
        prompt = render_prompt(example.prompt, tokenizer)
    eos = tokenizer.eos_token or ""
    completion = example.completion if example.completion.endswith(eos) else example.completion + eos
    return {"prompt": prompt, "completion": completion}


# ---------------------------------------------------------------------------------------------
# Preparing the split


def prepare(data: TrainingFile, tokenizer, *, max_seq_length: int, eval_fraction: float, seed: int) -> PreparedData:
    """Render, drop unusable rows (recorded as rejected), and split off a held-out set.

    Rejected: exact duplicates of an earlier row (they would weight one example twice and leak
    between train and eval) and prompts that alone fill ``max_seq_length`` (no completion token
    would survive truncation, so they teach nothing).
    """
    rows: list[dict[str, str]] = []
    rejected: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    rendered = [render_example(ex, tokenizer) for ex in data.examples]
    prompt_lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in rendered])["input_ids"]]
    for example, row, n_prompt in zip(data.examples, rendered, prompt_lengths, strict=True):
        key = (row["prompt"], row["completion"])
        if key in seen:
            rejected.append(f"{data.path.name}:{example.line}: duplicate of line {seen[key]}")
            continue
        if n_prompt >= max_seq_length:
            rejected.append(f"{data.path.name}:{example.line}: prompt is {n_prompt} tokens, "
                            f">= max_seq_length {max_seq_length}")
            continue
        seen[key] = example.line
        rows.append(row)
    if len(rows) < 2:
        raise InvalidRequestError(
            f"{data.path}: {len(rows)} usable example(s) after rejecting {len(rejected)}; need at least 2 "
            "(one to train on, one held out)",
            param="data",
        )
    train_rows, eval_rows = split_rows(rows, eval_fraction, seed)
    return PreparedData(train_rows, eval_rows, rejected)


def split_rows(rows: list[dict[str, str]], eval_fraction: float, seed: int):
    """Seeded shuffle, then hold out ``eval_fraction`` of the rows (at least one, at most all but one)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(rows) * eval_fraction)), len(rows) - 1)
    eval_idx = set(order[:n_eval])
    train = [rows[i] for i in order[n_eval:]]
    held_out = [rows[i] for i in sorted(eval_idx)]
    return train, held_out


# ---------------------------------------------------------------------------------------------
# Labels, exactly as trl builds them


class _TrlHost:
    """The three attributes trl's ``SFTTrainer._prepare_dataset`` reads from its trainer.

    trl 1.16 tokenizes prompt/completion rows and builds ``labels`` (-100 on prompt tokens) in
    that method. Calling it here — rather than re-implementing it — means the mask a test checks
    is the mask training uses; building a whole SFTTrainer just for this would need a model.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.chat_template = None  # only set by trl for assistant_only_loss, which we do not use
        self.completion_only_loss = True


def tokenize_dataset(dataset, tokenizer, *, max_length: int):
    """A prompt/completion ``Dataset`` as trl trains on it: ``input_ids`` and ``labels`` (-100 on prompt
    tokens), cut to ``max_length``, rows with no completion token left dropped."""
    import tempfile

    from trl import SFTConfig, SFTTrainer

    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, max_length=max_length, report_to=[], completion_only_loss=True, bf16=False)
        return SFTTrainer._prepare_dataset(_TrlHost(tokenizer), dataset, tokenizer, args, False, None, "train")


def tokenize_rows(rows: list[dict[str, str]], tokenizer, *, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and labels for prompt/completion rows through trl's own preparation path."""
    from datasets import Dataset

    prepared = tokenize_dataset(Dataset.from_list(rows), tokenizer, max_length=max_length)
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in prepared]


def tokenize_example(prompt: str, completion: str, tokenizer, *, max_length: int = 2048) -> dict[str, list[int]]:
    """``{"input_ids", "labels"}`` for one rendered example (labels are -100 on prompt tokens)."""
    rows = tokenize_rows([{"prompt": prompt, "completion": completion}], tokenizer, max_length=max_length)
    if not rows:
        raise InvalidRequestError("the example has no completion token left after truncation", param="data")
    return rows[0]


def supervised_fraction(dataset) -> float:
    """Share of tokens that carry loss in a trl-prepared dataset (``labels`` column)."""
    total = supervised = 0
    for labels in dataset["labels"]:
        total += len(labels)
        supervised += sum(1 for t in labels if t != -100)
    return supervised / total if total else 0.0
