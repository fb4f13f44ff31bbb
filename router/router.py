"""Per-request decisions: which adapter, whether to retrieve, and the prompt; then generation.

The router is the one path every caller shares (HTTP, ``ragtune ask``, eval), so what
eval measures is what production serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

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
        requests = [self._request(q, r, ps) for q, r, ps in zip(queries, routes, passages)]
        generations = self.backend.generate(requests)  # backends serialise engine access themselves
        latency_ms = (time.perf_counter() - start) * 1000
        return [
            _answer(g, r, ps, latency_ms, text=g.text.strip()) for g, r, ps in zip(generations, routes, passages)
        ]

    def answer_stream(self, query: ChatQuery) -> tuple[Route, list[Citation], Iterator[str | Answer]]:
        """Answer one query incrementally.

        Routing, retrieval and the engine's checks of the request (unknown adapter, prompt too
        long, bad schema) happen *before* this returns, so a caller can still answer with an
        error status. The iterator yields text pieces, then the whole ``Answer`` last; the pieces
        concatenate to ``Answer.text`` (leading and trailing whitespace trimmed, as ``answer``).
        Backends with a ``generate_stream`` stream token by token; others produce the whole
        answer and it comes as one piece.
        """
        start = time.perf_counter()
        route = self.resolve_route(query)
        passages = self._retrieve(query) if route.retrieval else []
        request = self._request(query, route, passages)
        citations = _citations(passages)
        stream_fn = getattr(self.backend, "generate_stream", None)
        if stream_fn is None:
            generation = self.backend.generate([request])[0]
            pieces: Iterator = iter([generation.text, generation])
        else:
            pieces = stream_fn(request)  # validates eagerly, then yields str pieces and the Generation

        def _events() -> Iterator[str | Answer]:
            raw = ""  # everything the engine produced so far
            sent = 0  # characters of the stripped text already yielded
            try:
                for piece in pieces:
                    if not isinstance(piece, str):
                        text = piece.text.strip()
                        if len(text) > sent:
                            yield text[sent:]
                        yield _answer(piece, route, passages, (time.perf_counter() - start) * 1000, text=text)
                        return
                    raw += piece
                    # Hold back leading and trailing whitespace so the pieces add up to the stripped text.
                    visible = raw.strip()
                    if len(visible) > sent:
                        yield visible[sent:]
                        sent = len(visible)
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()  # stops (aborts) the engine's generation when the caller stops early

        return route, citations, _events()

    def _request(self, q: ChatQuery, r: Route, ps) -> GenerationRequest:
        structured = q.json_schema is not None or q.json_object
        return GenerationRequest(
            prompt=self.prompts.build(q.messages, ps, adapter=r.adapter is not None),
            max_tokens=q.max_tokens or self.settings.max_tokens,
            temperature=q.temperature,
            top_p=q.top_p,
            # A JSON constraint ends the answer itself; the prompt's stops ("\n\n\n"...) could cut the JSON.
            stop=(q.stop or []) + ([] if structured else self.prompts.stops(adapter=r.adapter is not None)),
            adapter=r.adapter,
            seed=q.seed,
            json_schema=q.json_schema,
            json_object=q.json_object,
        )

    def _retrieve(self, query: ChatQuery):
        question = query.messages[-1].content
        return self.store.search(
            question,
            k=query.top_k or self.settings.top_k,
            collection=query.collection,
            tenant=query.tenant,
        )


def _citations(passages) -> list[Citation]:
    return [
        Citation(index=i, id=p.doc_id, chunk_id=p.id, source=p.source, score=p.score, text=p.text)
        for i, p in enumerate(passages, start=1)
    ]


def _answer(g, route: Route, passages, latency_ms: float, *, text: str) -> Answer:
    return Answer(
        text=text,
        citations=_citations(passages),
        route=route,
        prompt_tokens=g.prompt_tokens,
        completion_tokens=g.completion_tokens,
        finish_reason=g.finish_reason,
        latency_ms=latency_ms,
    )
