"""LoRA slot admission for vLLM under continuous batching: the engine's last slot stays empty.

Why: on vLLM's CPU LoRA path (0.32; upstream PRs #48421/#49656) a token with no adapter has slot
index -1, and the decode kernels index the stacked LoRA weights with it, so Python's negative
indexing applies *the last slot's* adapter to no-adapter requests; a slot once written is not
zeroed when its adapter is deactivated. vLLM fills the lowest free slot first, so the last slot is
never written while at most ``max_loras - 1`` adapters are resident in the engine at any moment.
(ragtune's CPU prefill plugin, ``router/backends/cpu_lora.py``, already gives -1 no LoRA in
prefill; decode still indexes.)

With an async engine the scheduler batches whatever is in flight, so the guard is admission: a
request for an adapter that is not resident waits until one of the resident adapters has no
request in flight, that adapter is removed from the engine (``remove_lora``), and the new one is
admitted. Requests for resident adapters and for no adapter never wait. The wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

from ragtune.errors import RagtuneError


class AdapterBusyError(RagtuneError):
    """Every usable LoRA slot is held by an adapter with requests in flight, for longer than the wait."""

    status_code = 429
    error_type = "rate_limit_error"


class LoraSlots:
    """Which adapter ids are resident in the engine (LRU order) and how many requests use each.

    All methods run on the engine's event loop (one loop: no locks beyond the condition).
    ``evict`` removes an adapter from the engine (vLLM's ``remove_lora``).
    """

    def __init__(self, usable: int, evict: Callable[[int], Awaitable[object]], *, wait_s: float = 60.0):
        if usable < 1:
            raise ValueError("need at least one usable LoRA slot (max_loras >= 2)")
        self.usable = usable
        self.wait_s = wait_s
        self._evict = evict
        self._resident: OrderedDict[int, None] = OrderedDict()
        self._in_flight: Counter[int] = Counter()
        self._changed: asyncio.Condition | None = None  # made on the loop that first uses it

    @property
    def resident(self) -> list[int]:
        """Ids resident in the engine, least recently used first."""
        return list(self._resident)

    def in_flight(self, lora_id: int) -> int:
        return self._in_flight[lora_id]

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    def victim(self, lora_id: int) -> int | None:
        """The resident adapter to remove before ``lora_id`` can come in: None when there is room,
        -1 when every resident adapter has requests in flight (``lora_id`` must wait)."""
        if lora_id in self._resident or len(self._resident) < self.usable:
            return None
        return next((i for i in self._resident if self._in_flight[i] == 0), -1)

    def _can_enter(self, lora_id: int) -> bool:
        return self.victim(lora_id) != -1

    @contextlib.asynccontextmanager
    async def use(self, lora_id: int | None) -> AsyncIterator[None]:
        """Hold ``lora_id`` resident for the block (no-op for None), waiting at most ``wait_s``."""
        if lora_id is None:
            yield
            return
        changed = self._condition()
        async with changed:
            if not self._can_enter(lora_id):
                try:
                    await asyncio.wait_for(changed.wait_for(lambda: self._can_enter(lora_id)), self.wait_s)
                except TimeoutError:
                    raise AdapterBusyError(
                        f"All {self.usable} LoRA slots are serving other adapters; adapter requests for a further "
                        f"adapter waited {self.wait_s:.0f}s. Retry, or raise max_loras.",
                        code="adapter_slots_busy",
                    ) from None
            old = self.victim(lora_id)
            if old is not None:
                del self._resident[old]
                await self._evict(old)
            self._resident[lora_id] = None
            self._resident.move_to_end(lora_id)
            self._in_flight[lora_id] += 1
        try:
            yield
        finally:
            async with changed:
                self._in_flight[lora_id] -= 1
                changed.notify_all()

    async def forget(self, lora_id: int) -> None:
        """The adapter left the engine (unloaded or replaced): free its slot for others."""
        changed = self._condition()
        async with changed:
            self._resident.pop(lora_id, None)
            changed.notify_all()
