"""Embed the queries of concurrent searches together: one model call for everything in flight.

The service runs each request's retrieval in a worker thread; alone, each would run the embedding
model on one query. Here the first caller leads: it waits ``window_s`` for others, embeds every
pending query in one batch and hands each caller its vector. Queries that arrived meanwhile wait
for the next batch, led by the first of them, so no caller serves others for longer than one
batch. A lone query pays only the window (1 ms).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Waiting:
    text: str
    ready: threading.Event = field(default_factory=threading.Event)
    vector: np.ndarray | None = None
    error: BaseException | None = None
    leads: bool = False


class QueryBatcher:
    def __init__(self, embed: Callable[[Sequence[str]], Sequence[np.ndarray]], *, window_s: float = 0.001,
                 max_batch: int = 64):
        self._embed = embed
        self.window_s = window_s
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Waiting] = []
        self._leading = False
        self.batches = 0  # model calls made (tests and benchmarks read it)

    def __call__(self, text: str) -> np.ndarray:
        me = _Waiting(text)
        with self._lock:
            self._pending.append(me)
            me.leads, self._leading = not self._leading, True
        if me.leads:
            time.sleep(self.window_s)  # let concurrent queries join this batch
        else:
            me.ready.wait()
        if me.vector is None and me.error is None:  # woken to lead the next batch (it holds us first)
            self._run_batch()
        if me.error is not None:
            raise me.error
        return me.vector

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
        try:
            vectors = self._embed([w.text for w in batch])
            self.batches += 1
            for w, v in zip(batch, vectors):
                w.vector = v
        except BaseException as exc:  # every caller of the batch gets the error, none hangs
            for w in batch:
                w.error = exc
        with self._lock:
            if self._pending:  # the next batch is led by the first query waiting for it
                self._pending[0].leads = True
                self._pending[0].ready.set()
            else:
                self._leading = False
        for w in batch:
            w.ready.set()
