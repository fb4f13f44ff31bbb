"""Prompt assembly: the conversation plus retrieved passages with numbered citations.

Base models (like the default gemma-3-270m) have no chat template: base requests get a plain
"Question:/Answer:" layout, adapter requests the instruction layout the trainer used. A model
whose tokenizer ships a chat template gets it for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ragtune.templates import INSTRUCTION_STOPS, render_messages
from router.schemas import ChatMessage

RAG_INSTRUCTION = (
    "Answer the question using only the numbered passages below, and cite the passage you used as [n]."
)
# Plain layouts stop at the next turn so the base model does not invent one.
PLAIN_STOPS = ["\nQuestion:", "\nUser:", "\n\n\n"]


def format_passages(passages: Sequence) -> str:
    return "\n".join(f"[{i}] ({p.source}) {' '.join(p.text.split())}" for i, p in enumerate(passages, start=1))


def _system_text(messages: Sequence[ChatMessage], passages: Sequence) -> str:
    parts = [m.content.strip() for m in messages if m.role == "system" and m.content.strip()]
    if passages:
        parts.append(RAG_INSTRUCTION + "\n\nPassages:\n" + format_passages(passages))
    return "\n\n".join(parts)


def build_plain_prompt(messages: Sequence[ChatMessage], passages: Sequence = ()) -> str:
    """Render for a base model: system text, passages, earlier turns, then 'Question: ...\\nAnswer:'."""
    blocks = []
    system = _system_text(messages, passages)
    if system:
        blocks.append(system)
    turns = [m for m in messages if m.role != "system"]
    for m in turns[:-1]:
        blocks.append(f"{'Question' if m.role == 'user' else 'Answer'}: {m.content.strip()}")
    blocks.append(f"Question: {turns[-1].content.strip()}\nAnswer:")
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
        system = _system_text(messages, passages)
        chat = ([{"role": "system", "content": system}] if system else []) + [
            {"role": m.role, "content": m.content} for m in messages if m.role != "system"
        ]
        return render_messages(chat, self._tokenizer)


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file():
        return True
    config = model_dir / "tokenizer_config.json"
    return config.is_file() and '"chat_template"' in config.read_text()
