"""Per-request decisions: which adapter, whether to retrieve, and the prompt; then generation.

The router is the one path every caller shares (HTTP, ``ragtune ask``, eval), so what
eval measures is what production serves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ragtune.errors import InvalidRequestError, NotFoundError
from ragtune.settings import Settings
from router.backends.base import Backend, GenerationRequest
from router.prompt import PromptBuilder
from router.schemas import Answer, ChatQuery, Citation, Route

BASE = "base"


class Router:
    """Resolves a query's route, retrieves when asked, builds the prompt and generates."""

    def __init__(self, settings: Settings, backend: Backend, prompts: PromptBuilder, store=None):
        self.settings = settings
        self.backend = backend
        self.prompts = prompts
        self.store = store  # retriever.store.FactStore, or None when retrieval is unavailable

    def model_names(self) -> list[str]:
        return [BASE, *sorted(self.backend.adapter_names())]

    def resolve_route(self, query: ChatQuery) -> Route:
        """Name the adapter and retrieval choice for a query, and say why."""
        adapter = query.adapter
        reasons = []
        if adapter:
            reasons.append(f"adapter '{adapter}' requested explicitly")
        elif query.model != BASE:
            adapter = query.model
            reasons.append(f"model '{query.model}' names an adapter")
        else:
            reasons.append("base model requested")
        if adapter is not None and adapter not in self.backend.adapter_names():
            known = ", ".join(self.model_names())
            raise NotFoundError(f"Unknown adapter or model '{adapter}'. Available: {known}.", param="model")
        if query.retrieval:
            if self.store is None:
                raise InvalidRequestError("Retrieval was requested but no fact store is configured.", param="retrieval")
            reasons.append("retrieval requested")
        else:
            reasons.append("no retrieval requested")
        return Route(name=adapter or BASE, adapter=adapter, retrieval=query.retrieval, reason="; ".join(reasons))

    def answer(self, query: ChatQuery) -> Answer:
        return self.answer_batch([query])[0]

    def answer_batch(self, queries: Sequence[ChatQuery]) -> list[Answer]:
        """Answer several queries in one engine batch (eval uses this; so can a server)."""
        start = time.perf_counter()
        routes = [self.resolve_route(q) for q in queries]
        passages = [self._retrieve(q) if r.retrieval else [] for q, r in zip(queries, routes)]
        requests = [
            GenerationRequest(
                prompt=self.prompts.build(q.messages, ps, adapter=r.adapter is not None),
                max_tokens=q.max_tokens or self.settings.max_tokens,
                temperature=q.temperature,
                top_p=q.top_p,
                stop=(q.stop or []) + self.prompts.stops(adapter=r.adapter is not None),
                adapter=r.adapter,
                seed=q.seed,
            )
            for q, r, ps in zip(queries, routes, passages)
        ]
        generations = self.backend.generate(requests)  # backends serialise engine access themselves
        latency_ms = (time.perf_counter() - start) * 1000
        return [
            Answer(
                text=g.text.strip(),
                citations=[
                    Citation(index=i, id=p.doc_id, chunk_id=p.id, source=p.source, score=p.score, text=p.text)
                    for i, p in enumerate(ps, start=1)
                ],
                route=r,
                prompt_tokens=g.prompt_tokens,
                completion_tokens=g.completion_tokens,
                finish_reason=g.finish_reason,
                latency_ms=latency_ms,
            )
            for g, r, ps in zip(generations, routes, passages)
        ]

    def _retrieve(self, query: ChatQuery):
        question = query.messages[-1].content
        return self.store.search(
            question,
            k=query.top_k or self.settings.top_k,
            collection=query.collection,
            tenant=query.tenant,
        )
