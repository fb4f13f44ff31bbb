"""Stops count only after the answer has begun (router.continuation).

The logic is checked on a scripted engine (pure bookkeeping: prompts in, texts out); the
regression that matters — long passages and a "\\n" stop no longer give an empty answer — runs on
the real vLLM engine below.
"""

from __future__ import annotations

import pytest

from router.backends.base import Generation, GenerationRequest
import asyncio

from router.continuation import MAX_ROUNDS, agenerate_until_content


class ScriptedEngine:
    """Answers each prompt from a script: prompt -> (text, stop string or None, tokens used)."""

    def __init__(self, script):
        self.script = script
        self.prompts: list[str] = []

    async def agenerate(self, r):
        self.prompts.append(r.prompt)
        text, stop, used = self.script[r.prompt]
        return Generation(text=text, token_ids=list(range(used)), prompt_tokens=3, completion_tokens=used,
                          finish_reason="stop" if stop or used < r.max_tokens else "length", stop_reason=stop)


def generate_until_content(engine, requests):
    async def run():
        return await asyncio.gather(*(agenerate_until_content(engine, r) for r in requests))

    return asyncio.run(run())


def _req(prompt, max_tokens=10):
    return GenerationRequest(prompt=prompt, max_tokens=max_tokens, stop=["\n"])


def test_a_blank_answer_cut_by_a_stop_is_continued():
    engine = ScriptedEngine({
        "Q:": ("", "\n", 1),          # the model opened with a newline: the stop fired at once
        "Q:\n": ("Paris", "\n", 2),   # continued from prompt + newline: the answer
        "R:": ("Rome", "\n", 2),      # answered at once: left alone
    })
    a, b = generate_until_content(engine, [_req("Q:"), _req("R:")])
    assert a.text.strip() == "Paris" and a.completion_tokens == 3 and a.stop_reason == "\n"
    assert a.token_ids == [0, 0, 1] and a.prompt_tokens == 3
    assert b.text == "Rome"
    assert sorted(engine.prompts) == ["Q:", "Q:\n", "R:"]  # one extra request, only for the blank one


def test_continuation_respects_the_token_budget_and_round_limit():
    engine = ScriptedEngine({"Q:": ("", "\n", 4), "Q:\n": ("Paris", None, 6)})
    [g] = generate_until_content(engine, [_req("Q:", max_tokens=10)])
    assert g.completion_tokens == 10 and g.finish_reason == "length"
    # EOS (no stop string) or an exhausted budget is an answer as it is, blank or not
    engine = ScriptedEngine({"Q:": ("", None, 1), "S:": ("  ", "\n", 10)})
    assert [g.text for g in generate_until_content(engine, [_req("Q:"), _req("S:")])] == ["", "  "]
    assert len(engine.prompts) == 2
    # a model that only ever writes newlines is given up on after MAX_ROUNDS continuations
    script = {"Q:" + "\n" * n: ("", "\n", 1) for n in range(MAX_ROUNDS + 1)}
    engine = ScriptedEngine(script)
    [g] = generate_until_content(engine, [_req("Q:", max_tokens=50)])
    assert g.text.strip() == "" and len(engine.prompts) == MAX_ROUNDS + 1


# --- the regression on the real engine --------------------------------------------------------

# Three retrieved TimeQA passages (test split, "Jimmy Lai") and its question.
QUESTION = "Lai Chee-ying, or Jimmy Lai, had what nationality from Dec 1948 to 1960?"
LONG_PASSAGES = [
    "Lai Chee-Ying ( , born 8 December 1947 ) , also known as Jimmy Lai , is a Hong Kong entrepreneur and "
    "activist . He founded Giordano , an Asian clothing retailer , Next Digital ( formerly Next Media ) , a "
    "Hong Kong-listed media company , and the popular newspaper Apple Daily . He is one of the main "
    "contributors to the pro-democracy camp , especially to the Democratic Party . Although he is known as a "
    "Hong Kong political figure , he has been a UK national since 1996 . Lai is also an art collector .",
    "On 29 December , Lai resigned from his roles with Next Digital as director and chairman of the board .",
    "Lai was born in Guangzhou , China on 8 December 1947 . At the age of 12 , he entered Hong Kong as a "
    "stowaway on a boat . Upon his arrival , Lai began work as a child labourer in a garment factory for a "
    "wage of the equivalent of US$8 per month . Lai is a practising Catholic .",
]
# The layout ragtune used before the fix (passages on top, a numbered list, then the question):
# gemma-3-270m answers it with a newline first, and the "\n" stop ended the answer there.
OLD_LAYOUT = ("Answer the question using only the numbered passages below, and cite the passage you used "
              "as [n].\n\nPassages:\n" + "\n".join(f"[{i}] (Jimmy Lai) {t}" for i, t in enumerate(LONG_PASSAGES, 1))
              + f"\n\nQuestion: {QUESTION}\nAnswer:")


@pytest.mark.slow
def test_long_passages_and_a_newline_stop_give_an_answer(vllm_backend):
    req = GenerationRequest(prompt=OLD_LAYOUT, max_tokens=24, stop=["\n"])
    [raw] = vllm_backend.generate([req])
    assert raw.text == "" and raw.stop_reason == "\n"  # the engine alone: the empty answer of the issue
    [fixed] = generate_until_content(vllm_backend, [req])
    assert fixed.text.strip(), fixed
    assert fixed.completion_tokens > raw.completion_tokens
    # and the layout the router renders now puts the answer right after "Answer:"
    from retriever.models import Passage
    from router.prompt import build_plain_prompt
    from router.schemas import ChatMessage

    passages = [Passage(id=f"lai::{i}", doc_id="lai", chunk=i, source="Jimmy Lai", text=t, score=0.5)
                for i, t in enumerate(LONG_PASSAGES)]
    prompt = build_plain_prompt([ChatMessage(role="user", content=QUESTION)], passages)
    [now] = generate_until_content(vllm_backend, [req.model_copy(update={"prompt": prompt})])
    assert now.text.strip(), now
