"""Prompt assembly: the conversation plus retrieved passages with numbered citations.

Base models (like the default gemma-3-270m) have no chat template: base requests get a plain
"Question:/Answer:" layout, adapter requests the instruction layout the trainer used. A model
whose tokenizer ships a chat template gets it for both.

Passages are of two kinds (``retriever.models.PassageKind``): *facts*, numbered ``[n]`` and
cited, and *examples* — solved instances of the task (retrieved few-shot) — shown as examples and
never presented as sources to cite.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ragtune.templates import INSTRUCTION_STOPS, render_messages
from router.schemas import ChatMessage

RAG_INSTRUCTION = (
    "Answer the question using only the numbered passages below, and cite the passage you used as [n]."
)
EXAMPLES_INSTRUCTION = "Solved examples of this task (they show the form of the answer; they are not sources):"
# For base models the passages come right before the question, and this cue sits between them: with
# the passages on top of the prompt and "Answer:" after a numbered list, gemma-3-270m went on
# listing passages ("\n[4] (...)") instead of answering (F1 0.08 vs 0.16 on 100 TimeQA items).
PLAIN_FACTS_CUE = "Based on the passages above, answer the question."
# Plain layouts stop at the next turn so the base model does not invent one.
PLAIN_STOPS = ["\nQuestion:", "\nUser:", "\n\n\n"]


def _numbered(passages: Sequence) -> list[tuple[int, object]]:
    """(citation number, passage) for every passage; numbers match the response's citations."""
    return list(enumerate(passages, start=1))


def _facts(passages: Sequence) -> list[tuple[int, object]]:
    return [(i, p) for i, p in _numbered(passages) if getattr(p, "kind", "fact") == "fact"]


def _examples(passages: Sequence) -> list[object]:
    return [p for p in passages if getattr(p, "kind", "fact") == "example"]


def _flat(text: str) -> str:
    return " ".join(text.split())


def format_passages(numbered: Sequence[tuple[int, object]]) -> str:
    """Facts as one numbered line each: ``[n] (source) text``."""
    return "\n".join(f"[{i}] ({p.source}) {_flat(p.text)}" for i, p in numbered)


def format_examples(examples: Sequence) -> str:
    return "\n\n".join(f"Example {i}:\n{p.text.strip()}" for i, p in enumerate(examples, start=1))


def context_text(passages: Sequence) -> str:
    """The passages as instruction-layout system text (adapters, chat templates)."""
    parts = []
    facts, examples = _facts(passages), _examples(passages)
    if examples:
        parts.append(EXAMPLES_INSTRUCTION + "\n\n" + format_examples(examples))
    if facts:
        parts.append(RAG_INSTRUCTION + "\n\nPassages:\n" + format_passages(facts))
    return "\n\n".join(parts)


def _system_text(messages: Sequence[ChatMessage], passages: Sequence) -> str:
    parts = [m.content.strip() for m in messages if m.role == "system" and m.content.strip()]
    context = context_text(passages)
    if context:
        parts.append(context)
    return "\n\n".join(parts)


def build_plain_prompt(messages: Sequence[ChatMessage], passages: Sequence = ()) -> str:
    """Render for a base model: system text, examples, earlier turns, facts, then 'Question: ...\\nAnswer:'."""
    blocks = [m.content.strip() for m in messages if m.role == "system" and m.content.strip()]
    examples = _examples(passages)
    if examples:
        blocks.append(EXAMPLES_INSTRUCTION + "\n\n" + format_examples(examples))
    turns = [m for m in messages if m.role != "system"]
    for m in turns[:-1]:
        blocks.append(f"{'Question' if m.role == 'user' else 'Answer'}: {m.content.strip()}")
    facts = _facts(passages)
    if facts:
        blocks.append("\n\n".join(f"Passage [{i}] ({p.source}): {_flat(p.text)}" for i, p in facts))
    question = f"Question: {turns[-1].content.strip()}\nAnswer:"
    blocks.append(f"{PLAIN_FACTS_CUE}\n{question}" if facts else question)
    return "\n\n".join(blocks)


class PromptBuilder:
    """Renders prompts for one base model: its chat template if it has one; otherwise the
    plain Question/Answer layout for the base model and, for adapters, the instruction layout
    they were trained on (ragtune.templates, shared with the trainer)."""

    def __init__(self, model_dir: Path):
        self._tokenizer = None
        if _has_chat_template(model_dir):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(model_dir)

    @property
    def uses_chat_template(self) -> bool:
        return self._tokenizer is not None

    def stops(self, *, adapter: bool) -> list[str]:
        if self.uses_chat_template:
            return []
        return list(INSTRUCTION_STOPS if adapter else PLAIN_STOPS)

    def build(self, messages: Sequence[ChatMessage], passages: Sequence = (), *, adapter: bool = False) -> str:
        if not self.uses_chat_template and not adapter:
            return build_plain_prompt(messages, passages)
        return render_messages(instruction_chat(messages, passages), self._tokenizer)


def instruction_chat(messages: Sequence[ChatMessage], passages: Sequence = ()) -> list[dict[str, str]]:
    """The chat an adapter sees: system text (with the passages) first, then the turns.

    The reader adapter's training data is rendered through this same function, so what it
    learned from is what it is served.
    """
    system = _system_text(messages, passages)
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": m.role, "content": m.content} for m in messages if m.role != "system"
    ]


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    return config.is_file() and '"chat_template"' in config.read_text()
