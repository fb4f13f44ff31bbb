"""LoRA slot planning for vLLM: keep the engine's last LoRA slot empty, always.

Why: on vLLM's CPU LoRA path (0.32, upstream PRs #48421/#49656) a token with no adapter has
slot index -1, and the kernels index the stacked LoRA weights with it, so Python's negative
indexing applies *the last slot's* adapter to no-adapter requests. Deactivating an adapter
does not zero its slot either, so once the last slot has ever been written, every later
no-adapter request is silently wrong. vLLM fills the lowest free slot first and only evicts
when all ``max_loras`` slots are active, so the last slot stays untouched as long as at most
``max_loras - 1`` adapters are active at any moment. This module plans for that:

* a batch with more distinct adapters than ``max_loras - 1`` is split into sub-batches;
* before each sub-batch, adapters still active from earlier batches are evicted (least
  recently used first) until the sub-batch's adapters fit into ``max_loras - 1`` slots.

Pure logic (no vLLM import), so it is unit-tested directly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def split_batch(adapter_ids: Sequence[int | None], usable_slots: int) -> list[list[int]]:
    """Group request indices into sub-batches with at most ``usable_slots`` distinct adapters each.

    Adapters are grouped in order of first appearance; no-adapter requests (None) ride in the
    first sub-batch. Indices inside a sub-batch keep their original order.
    """
    if usable_slots < 1:
        raise ValueError("need at least one usable LoRA slot (max_loras >= 2)")
    distinct: list[int] = list(dict.fromkeys(a for a in adapter_ids if a is not None))
    if len(distinct) <= usable_slots:
        return [list(range(len(adapter_ids)))] if adapter_ids else []
    group_of = {a: i // usable_slots for i, a in enumerate(distinct)}
    groups: list[list[int]] = [[] for _ in range((len(distinct) + usable_slots - 1) // usable_slots)]
    for index, adapter in enumerate(adapter_ids):
        groups[0 if adapter is None else group_of[adapter]].append(index)
    return groups


class SlotPlanner:
    """Mirrors which adapter ids may be active in the engine's slots, in LRU order."""

    def __init__(self, usable_slots: int):
        if usable_slots < 1:
            raise ValueError("need at least one usable LoRA slot (max_loras >= 2)")
        self.usable_slots = usable_slots
        self._active: OrderedDict[int, None] = OrderedDict()

    @property
    def active(self) -> list[int]:
        """Possibly active ids, least recently used first."""
        return list(self._active)

    def admit(self, ids: set[int]) -> list[int]:
        """Make room for ``ids`` and mark them used; return the ids to evict from the engine first."""
        if len(ids) > self.usable_slots:
            raise ValueError(f"{len(ids)} adapters cannot share {self.usable_slots} usable slots")
        evict: list[int] = []
        for old in list(self._active):
            if len(set(self._active) | ids) <= self.usable_slots:
                break
            if old not in ids:
                del self._active[old]
                evict.append(old)
        for i in sorted(ids):
            self._active[i] = None
            self._active.move_to_end(i)
        return evict

    def forget(self, lora_id: int) -> None:
        self._active.pop(lora_id, None)
