"""Per-request decisions: which adapter, whether to retrieve, and the prompt; then generation.

The router is the one path every caller shares (HTTP, ``ragtune ask``, eval), so what
eval measures is what production serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from ragtune.errors import ConfigError, InvalidRequestError, NotFoundError, PermissionDeniedError
from ragtune.settings import Settings
from router.backends.base import Backend, GenerationRequest
from router.continuation import MAX_ROUNDS, agenerate_until_content, continuation, joined, needs_more
from router.prompt import PromptBuilder
from router.routes import RouteSpec, check_routes, load_routes
from router.schemas import Answer, ChatMessage, ChatQuery, Citation, Route

BASE = "base"


class Router:
    """Resolves a query's route, retrieves when asked, builds the prompt and generates."""

    def __init__(self, settings: Settings, backend: Backend, prompts: PromptBuilder, store=None,
                 routes: dict[str, RouteSpec] | None = None):
        self.settings = settings
        self.backend = backend
        self.prompts = prompts
        self.store = store  # retriever.store.FactStore, or None when retrieval is unavailable
        # Named routes (settings.routes_file), checked against the adapters loaded now.
        source = str(settings.routes_file) if routes is None else "<routes>"
        self.routes = load_routes(settings.routes_file) if routes is None else routes
        check_routes(self.routes, backend.adapter_names(), source)

    def model_names(self) -> list[str]:
        return [BASE, *sorted(self.backend.adapter_names()), *sorted(self.routes)]

    def resolve_route(self, query: ChatQuery) -> Route:
        """Name the adapter and retrieval choice for a query, and say why."""
        return self._plan(query)[0]

    def _plan(self, query: ChatQuery) -> tuple[Route, ChatQuery, list]:
        """The route taken, the query with the route's defaults filled in, and the passages to use.

        ``retrieval: auto`` searches here: the passages are kept only when the best score reaches
        ``settings.retrieval_threshold``.
        """
        spec = self.routes.get(query.model)
        adapters = self.backend.adapter_names()
        reasons = []
        if spec is not None:
            reasons.append(f"route '{query.model}'")
        adapter = query.adapter
        if adapter:
            reasons.append(f"adapter '{adapter}' requested explicitly")
        elif spec is not None:
            adapter = spec.adapter
            if adapter is not None and adapter not in adapters:
                raise ConfigError(
                    f"Route '{query.model}' names adapter '{adapter}', which is not loaded "
                    f"(loaded: {', '.join(sorted(adapters)) or 'none'}).",
                )
            reasons.append(f"route adapter '{adapter}'" if adapter else "route uses the base model")
        elif query.model != BASE:
            adapter = query.model
            reasons.append(f"model '{query.model}' names an adapter")
        else:
            reasons.append("base model requested")
        if adapter is not None and adapter not in adapters:
            known = ", ".join(self.model_names())
            raise NotFoundError(
                f"Unknown adapter or model '{adapter}'. Available (base, adapters, routes): {known}.", param="model"
            )

        q = self._with_route_defaults(query, spec)
        if query.retrieval is not None:
            mode = {True: "on", False: "off"}.get(query.retrieval, query.retrieval)
            origin = "requested"
        elif spec is not None:
            mode, origin = spec.retrieval, "route default"
        else:
            mode, origin = "off", "default"
        passages: list = []
        if mode == "on":
            if self.store is None:
                raise InvalidRequestError("Retrieval was requested but no fact store is configured.", param="retrieval")
            passages = self._retrieve(q)
            reasons.append(f"retrieval on ({origin})")
        elif mode == "auto":
            if self.store is None:
                reasons.append(f"retrieval auto ({origin}): no fact store configured, answered without passages")
            else:
                try:
                    found = self._retrieve(q)
                except NotFoundError as exc:  # nothing ingested yet for this collection/tenant
                    found = []
                    reasons.append(f"retrieval auto: {exc.message}")
                threshold = self.settings.retrieval_threshold
                if not found:
                    reasons.append(f"retrieval auto ({origin}): no passages found, answered without")
                elif found[0].score >= threshold:
                    passages = found
                    reasons.append(
                        f"retrieval auto ({origin}): best score {found[0].score:.3f} >= threshold {threshold:.3f}, "
                        f"retrieved {len(found)} passage(s)"
                    )
                else:
                    reasons.append(
                        f"retrieval auto ({origin}): best score {found[0].score:.3f} < threshold {threshold:.3f}, "
                        "answered without passages"
                    )
        else:
            reasons.append("no retrieval requested" if origin == "default" else f"retrieval off ({origin})")
        if adapter is None:
            adapter = self._reader_for(q, passages, adapters, reasons)
        name = query.model if spec is not None else (adapter or BASE)
        route = Route(name=name, adapter=adapter, retrieval=bool(passages) or mode == "on", reason="; ".join(reasons))
        return route, q, passages

    def _reader_for(self, query: ChatQuery, passages: list, adapters, reasons: list[str]) -> str | None:
        """The reader adapter for a base-model answer over retrieved facts, when it is loaded and wanted."""
        reader = self.settings.reader_adapter
        facts = bool(passages) and all(p.kind == "fact" for p in passages)
        if query.reader is False or not facts:
            return None
        if reader is None or reader not in adapters:
            if query.reader:
                raise InvalidRequestError(
                    f"reader: true, but the reader adapter ({reader or 'settings.reader_adapter is unset'}) is not "
                    f"loaded (loaded: {', '.join(sorted(adapters)) or 'none'}).", param="reader",
                )
            return None
        reasons.append(f"reader adapter '{reader}' answers from the retrieved passages and cites them "
                       "(reader: false for the bare base model)")
        return reader

    @staticmethod
    def _with_route_defaults(query: ChatQuery, spec: RouteSpec | None) -> ChatQuery:
        if spec is None:
            return query
        update: dict = {}
        if spec.pin_tenant:
            if query.tenant is not None and query.tenant != spec.tenant:
                raise PermissionDeniedError(f"Route '{query.model}' serves tenant '{spec.tenant}' only.", param="tenant",
                                            code="tenant_forbidden")
            update["tenant"] = spec.tenant
        for field in ("collection", "tenant", "top_k", "as_of"):
            if getattr(query, field) is None and getattr(spec, field) is not None:
                update[field] = getattr(spec, field)
        if spec.system_prompt and not any(m.role == "system" for m in query.messages):
            update["messages"] = [ChatMessage(role="system", content=spec.system_prompt), *query.messages]
        fmt = spec.response_format
        if fmt is not None and query.json_schema is None and not query.json_object and not query.plain_text:
            if fmt.type == "json_schema":
                update["json_schema"] = fmt.json_schema.schema_
            elif fmt.type == "json_object":
                update["json_object"] = True
        return query.model_copy(update=update) if update else query

    # Answering ------------------------------------------------------------------------------
    # Async first: the service awaits these on its event loop while the engine batches every
    # request in flight. Routing and retrieval (Chroma + the embedding model) run in a worker
    # thread so they never block that loop.

    async def aanswer(self, query: ChatQuery) -> Answer:
        start = time.perf_counter()
        route, q, passages, retrieval_ms = await asyncio.to_thread(self._plan_timed, query)
        generation = await agenerate_until_content(self.backend, self._request(q, route, passages))
        return _answer(generation, route, passages, (time.perf_counter() - start) * 1000,
                       text=generation.text.strip(), retrieval_ms=retrieval_ms)

    def answer(self, query: ChatQuery) -> Answer:
        """Blocking :meth:`aanswer`, for callers without an event loop (the CLI, scripts)."""
        return asyncio.run(self.aanswer(query))

    async def astream(self, query: ChatQuery) -> tuple[Route, list[Citation], AsyncIterator[str | Answer]]:
        """Answer one query incrementally.

        Routing, retrieval and the engine's checks of the request (unknown adapter, prompt too
        long, bad schema) happen *before* this returns, so a caller can still answer with an
        error status. The iterator yields text pieces, then the whole ``Answer`` last; the pieces
        concatenate to ``Answer.text`` (leading and trailing whitespace trimmed, as ``aanswer``).
        Closing the iterator early aborts the generation.
        """
        start = time.perf_counter()
        route, query, passages, retrieval_ms = await asyncio.to_thread(self._plan_timed, query)
        request = self._request(query, route, passages)
        citations = citations_for(passages)
        pieces = self.backend.astream(request)
        first = await anext(pieces)  # the engine accepted the request (or raised its 4xx)

        async def _events() -> AsyncIterator[str | Answer]:
            nonlocal pieces
            pending = [first]
            raw = ""  # everything the engine produced so far
            sent = 0  # characters of the stripped text already yielded
            total = None  # the Generation so far (rounds joined, see router.continuation)
            ttft = None
            try:
                for round_ in range(MAX_ROUNDS + 1):
                    async for piece in _chain(pending, pieces):
                        if not isinstance(piece, str):
                            total = piece if total is None else joined(total, piece)
                            break
                        raw += piece
                        # Hold back leading and trailing whitespace so the pieces add up to the stripped text.
                        visible = raw.strip()
                        if len(visible) > sent:
                            if ttft is None:
                                ttft = (time.perf_counter() - start) * 1000
                            yield visible[sent:]
                            sent = len(visible)
                    pending = []
                    if total is None or round_ == MAX_ROUNDS or not needs_more(request, total):
                        break
                    raw += total.stop_reason
                    await pieces.aclose()
                    pieces = self.backend.astream(continuation(request, total))  # the stop came before any content
                text = total.text.strip()
                if len(text) > sent:
                    yield text[sent:]
                yield _answer(total, route, passages, (time.perf_counter() - start) * 1000, text=text,
                              retrieval_ms=retrieval_ms, ttft_ms=ttft)
            finally:
                await pieces.aclose()  # stops (aborts) the engine's generation when the caller stops early

        return route, citations, _events()

    def _plan_timed(self, query: ChatQuery) -> tuple[Route, ChatQuery, list, float]:
        started = time.perf_counter()
        route, q, passages = self._plan(query)
        return route, q, passages, (time.perf_counter() - started) * 1000 if route.retrieval else 0.0

    def _request(self, q: ChatQuery, r: Route, ps) -> GenerationRequest:
        structured = q.json_schema is not None or q.json_object
        return GenerationRequest(
            prompt=self.prompts.build(q.messages, ps, adapter=r.adapter is not None),
            max_tokens=q.max_tokens or self.settings.max_tokens,
            min_tokens=q.min_tokens,
            temperature=q.temperature,
            top_p=q.top_p,
            # A JSON constraint ends the answer itself; the prompt's stops ("\n\n\n"...) could cut the JSON.
            stop=(q.stop or []) + ([] if structured else self.prompts.stops(adapter=r.adapter is not None)),
            adapter=r.adapter,
            seed=q.seed,
            json_schema=q.json_schema,
            json_object=q.json_object,
        )

    def retrieve(self, query: ChatQuery):
        """The passages ``query`` asks for (its retrieval query, collection, top_k, tenant and as_of):
        what a retrieval route puts in the prompt, for callers that build their own (the eval's api arm)."""
        if self.store is None:
            raise InvalidRequestError("Retrieval was requested but no fact store is configured.", param="retrieval")
        return self._retrieve(query)

    def _retrieve(self, query: ChatQuery):
        question = query.retrieval_query or query.messages[-1].content
        return self.store.search(
            question,
            k=query.top_k or self.settings.top_k,
            collection=query.collection,
            tenant=query.tenant,
            as_of=query.as_of,
        )


async def _chain(first: list, rest: AsyncIterator) -> AsyncIterator:
    for item in first:
        yield item
    async for item in rest:
        yield item


def citations_for(passages) -> list[Citation]:
    return [
        Citation(index=i, id=p.doc_id, chunk_id=p.id, source=p.source, score=p.score, text=p.text, kind=p.kind,
                 version=p.version, valid_from=p.valid_from, valid_to=p.valid_to)
        for i, p in enumerate(passages, start=1)
    ]


def _answer(g, route: Route, passages, latency_ms: float, *, text: str, retrieval_ms: float = 0.0,
            ttft_ms: float | None = None) -> Answer:
    return Answer(
        text=text,
        citations=citations_for(passages),
        route=route,
        prompt_tokens=g.prompt_tokens,
        completion_tokens=g.completion_tokens,
        finish_reason=g.finish_reason,
        latency_ms=latency_ms,
        retrieval_ms=retrieval_ms,
        ttft_ms=ttft_ms,
    )
