"""Admission control for chat: a bounded number of requests generating, a bounded queue, a deadline.

The engine batches whatever is in flight, so ``max_inflight`` is the batch the service lets the
engine see; up to ``max_queue`` more wait their turn (first come, first served) and anything beyond
is refused at once with 429 and ``Retry-After`` — a full queue never grows memory. Every request
also has a deadline (``request_timeout_s``, queueing included): past it the generation is
cancelled (the engine aborts it) and the client gets 504. Probes and admin endpoints do not pass
through here, so they answer while generation is saturated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ragtune.errors import RagtuneError
from ragtune.settings import Settings
from service import metrics


class TooManyRequestsError(RagtuneError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int, **kw):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class RequestTimeoutError(RagtuneError):
    status_code = 504
    error_type = "timeout_error"


class Admission:
    """One per app; used only from the app's event loop."""

    def __init__(self, settings: Settings):
        self.max_inflight = settings.max_inflight
        self.max_queue = settings.max_queue
        self.timeout_s = settings.request_timeout_s
        self.retry_after_s = settings.retry_after_s
        self.in_flight = 0
        self.queued = 0
        self._turns: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a generation slot (or refuse with 429 when the queue is full); hold it for the block."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.max_inflight)
        if self._turns.locked() and self.queued >= self.max_queue:
            metrics.REJECTED.inc()
            raise TooManyRequestsError(
                f"The service is at capacity ({self.max_inflight} requests generating, {self.queued} queued); "
                f"retry after {self.retry_after_s}s.", retry_after_s=self.retry_after_s, code="server_busy")
        self.queued += 1
        metrics.QUEUED.inc()
        try:
            await self._turns.acquire()
        finally:
            self.queued -= 1
            metrics.QUEUED.dec()
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        try:
            yield
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.dec()
            self._turns.release()

    @contextlib.asynccontextmanager
    async def deadline(self) -> AsyncIterator[None]:
        """Cancel the block (aborting its generation) when the request's time is up: 504."""
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError:
            raise RequestTimeoutError(
                f"The answer took longer than request_timeout_s={self.timeout_s:g}s; its generation was aborted.",
                code="request_timeout") from None
