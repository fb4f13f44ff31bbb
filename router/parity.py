"""Greedy-token parity of an adapter between vLLM and transformers+peft (``ragtune parity ADAPTER``).

vLLM applies LoRA with its own kernels (punica; on CPU a separate path) and has shipped silent
LoRA mismatches before (vLLM issue #10798: adapter outputs differing from peft with no error).
This check generates greedily with both engines on a fixed prompt set -- a few prompts in the
adapter's trained style (taken from the training file its card names) plus generic ones, all
rendered exactly as the router serves adapter requests -- and reports, per prompt, the first
token index where the engines disagree.

bf16 caveat: both engines run in bf16, where logits are coarse (0.125 apart for gemma-3-270m),
so two candidate tokens can tie exactly and either engine may pick either; a single late flip
is rounding, an early or widespread divergence is a bug. The check therefore fails only when a
prompt agrees on fewer than ``min_identical`` tokens (default 8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from router.backends.base import Backend, GenerationRequest
from router.schemas import ChatMessage

REPO = Path(__file__).resolve().parents[1]

GENERIC_PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
]


def style_prompts(adapter_dir: Path, n: int) -> list[str]:
    """The first ``n`` distinct prompts of the training file named in the adapter's card (if found)."""
    card = Path(adapter_dir) / "card.json"
    if n <= 0 or not card.is_file():
        return []
    data_path = (json.loads(card.read_text()).get("data") or {}).get("path")
    if not data_path:
        return []
    for candidate in (Path(data_path), REPO / data_path):
        if candidate.is_file():
            break
    else:
        return []
    prompts: list[str] = []
    with candidate.open() as fh:
        for line in fh:
            row = json.loads(line)
            text = row.get("prompt") or next(
                (m["content"] for m in row.get("messages", []) if m.get("role") == "user"), None
            )
            if text and text not in prompts:
                prompts.append(text)
            if len(prompts) >= n:
                break
    return prompts


def parity_prompts(adapter_dir: Path, n: int = 6) -> list[tuple[str, str]]:
    """``(kind, user message)`` pairs: about two thirds in the adapter's style, the rest generic."""
    n_style = max(1, (2 * n) // 3)
    style = [("style", p) for p in style_prompts(adapter_dir, n_style)]
    generic = [("generic", p) for p in GENERIC_PROMPTS]
    return (style + generic)[:n] if len(style) + len(generic) >= n else style + generic


@dataclass
class PromptParity:
    kind: str
    prompt: str
    vllm_ids: list[int]
    hf_ids: list[int]
    first_divergence: int | None = field(init=False)

    def __post_init__(self) -> None:
        a, b = self.vllm_ids, self.hf_ids
        self.first_divergence = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if self.first_divergence is None and len(a) != len(b):
            self.first_divergence = min(len(a), len(b))  # one engine stopped (EOS) earlier

    @property
    def identical_tokens(self) -> int:
        return len(self.vllm_ids) if self.first_divergence is None else self.first_divergence

    def describe(self) -> str:
        if self.first_divergence is None:
            return f"identical for {len(self.vllm_ids)} tokens"
        return f"diverges at token {self.first_divergence} (vLLM {self.vllm_ids[self.first_divergence:][:1]} " \
               f"vs peft {self.hf_ids[self.first_divergence:][:1]})"


@dataclass
class ParityReport:
    adapter: str
    tokens: int
    min_identical: int
    results: list[PromptParity]

    def passed(self, r: PromptParity) -> bool:
        # Identical outputs that ended early (EOS) in both engines pass too.
        return r.first_divergence is None or r.identical_tokens >= self.min_identical

    @property
    def ok(self) -> bool:
        return all(self.passed(r) for r in self.results)

    def summary(self) -> str:
        identical = sum(r.first_divergence is None for r in self.results)
        failing = sum(not self.passed(r) for r in self.results)
        return (
            f"{self.adapter}: {identical}/{len(self.results)} prompts identical for {self.tokens} tokens; "
            f"{failing} diverge before token {self.min_identical} -> {'OK' if self.ok else 'MISMATCH'}"
        )

    def to_json(self) -> dict:
        return {
            "adapter": self.adapter,
            "tokens": self.tokens,
            "min_identical": self.min_identical,
            "ok": self.ok,
            "prompts": [
                {"kind": r.kind, "prompt": r.prompt[:80], "first_divergence": r.first_divergence,
                 "identical_tokens": r.identical_tokens, "passed": self.passed(r)}
                for r in self.results
            ],
        }


def check_parity(
    vllm: Backend,
    hf: Backend,
    adapter: str,
    prompts: list[tuple[str, str]],
    prompt_builder,
    *,
    tokens: int = 16,
    min_identical: int = 8,
) -> ParityReport:
    """Greedy ids of ``adapter`` (loaded in both engines) on each prompt, compared token by token.

    ``adapter=None`` compares the base model. No stop strings: only EOS or ``tokens`` end a run.
    """
    rendered = [
        prompt_builder.build([ChatMessage(role="user", content=p)], adapter=adapter is not None) for _, p in prompts
    ]
    requests = [GenerationRequest(prompt=text, max_tokens=tokens, adapter=adapter) for text in rendered]
    got_vllm = vllm.generate(requests)
    got_hf = hf.generate(requests)
    results = [
        PromptParity(kind=k, prompt=p, vllm_ids=v.token_ids, hf_ids=h.token_ids)
        for (k, p), v, h in zip(prompts, got_vllm, got_hf, strict=True)
    ]
    return ParityReport(adapter=adapter or "base", tokens=tokens, min_identical=min_identical, results=results)
