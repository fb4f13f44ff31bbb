"""Prompt assembly (pure logic) and the plain layout the base model is used with."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from retriever.models import Passage
from ragtune.templates import INSTRUCTION_STOPS
from router.prompt import (
    EXAMPLES_INSTRUCTION,
    PLAIN_FACTS_CUE,
    PLAIN_STOPS,
    RAG_INSTRUCTION,
    PromptBuilder,
    build_plain_prompt,
    context_text,
)
from router.schemas import ChatMessage, ChatQuery


def _p(doc: str, text: str) -> Passage:
    return Passage(id=f"{doc}::0", doc_id=doc, chunk=0, source=f"{doc}.md", text=text, score=0.9)


def test_passages_are_numbered_in_order_with_sources():
    prompt = build_plain_prompt(
        [ChatMessage(role="user", content="Who?")], [_p("a", "Alpha  text\nwraps."), _p("b", "Beta.")]
    )
    assert "Passage [1] (a.md): Alpha text wraps." in prompt
    assert "Passage [2] (b.md): Beta." in prompt
    # passages right before the question, the cue between them: the answer starts after "Answer:"
    assert prompt.index("[1]") < prompt.index("[2]") < prompt.index(PLAIN_FACTS_CUE) < prompt.index("Question: Who?")
    assert prompt.endswith(f"{PLAIN_FACTS_CUE}\nQuestion: Who?\nAnswer:")


def test_examples_are_shown_as_examples_not_sources():
    ex = _p("e", "Description: x\nJSON: {}").model_copy(update={"kind": "example"})
    fact = _p("a", "Alpha.")
    msgs = [ChatMessage(role="user", content="Do it.")]
    plain = build_plain_prompt(msgs, [ex])
    assert EXAMPLES_INSTRUCTION in plain and "Example 1:\nDescription: x" in plain
    assert RAG_INSTRUCTION not in plain and PLAIN_FACTS_CUE not in plain and "[1]" not in plain
    # mixed: facts keep their citation numbers ([2] here), examples are not numbered as sources
    mixed = context_text([ex, fact])
    assert "Example 1:" in mixed and "[2] (a.md) Alpha." in mixed and "[1]" not in mixed
    assert mixed.index(EXAMPLES_INSTRUCTION) < mixed.index(RAG_INSTRUCTION)


def test_no_passages_means_no_instruction():
    prompt = build_plain_prompt([ChatMessage(role="user", content="Hi")])
    assert prompt == "Question: Hi\nAnswer:"


def test_system_and_earlier_turns_are_kept():
    msgs = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="One?"),
        ChatMessage(role="assistant", content="1"),
        ChatMessage(role="user", content="Two?"),
    ]
    assert build_plain_prompt(msgs) == "Be brief.\n\nQuestion: One?\n\nAnswer: 1\n\nQuestion: Two?\nAnswer:"


def test_base_model_folder_uses_plain_layout(base_model_dir):
    builder = PromptBuilder(base_model_dir)
    assert not builder.uses_chat_template  # gemma-3-270m base ships no chat template
    assert builder.stops(adapter=False) == PLAIN_STOPS
    assert builder.stops(adapter=True) == INSTRUCTION_STOPS


def test_adapter_requests_get_the_trainers_layout(base_model_dir):
    from ragtune.templates import PLAIN_TEMPLATE

    builder = PromptBuilder(base_model_dir)
    msgs = [ChatMessage(role="user", content="Extract this.")]
    assert builder.build(msgs, adapter=True) == PLAIN_TEMPLATE.format(prompt="Extract this.")
    with_passages = builder.build(msgs, [_p("a", "Alpha.")], adapter=True)
    assert with_passages.startswith("### System:\n")
    assert "[1] (a.md) Alpha." in with_passages
    assert with_passages.endswith("### Instruction:\nExtract this.\n\n### Response:\n")


def test_query_validation_names_the_problem():
    with pytest.raises(ValidationError, match="at least 1"):
        ChatQuery(messages=[])
    with pytest.raises(ValidationError, match="role 'user'"):
        ChatQuery(messages=[ChatMessage(role="assistant", content="x")])
    with pytest.raises(ValidationError, match="empty"):
        ChatQuery(messages=[ChatMessage(role="user", content="   ")])
