"""The generation contract every engine implements, and the factory that picks one.

Engines answer one request at a time as a coroutine; vLLM's async engine schedules everything in
flight together (continuous batching), and a batch may mix adapters (and no adapter) freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ragtune.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from ragtune.settings import Settings


class GenerationRequest(BaseModel):
    """One completion to produce. ``temperature == 0`` means greedy (deterministic)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="The full prompt text; the tokenizer adds <bos>.")
    max_tokens: int = Field(default=128, ge=1, description="Most new tokens to generate.")
    min_tokens: int = Field(default=0, ge=0, description="Fewest new tokens: EOS and stop strings wait (benchmarks).")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (ignored when greedy).")
    stop: list[str] | None = Field(default=None, description="Stop strings; not included in the text.")
    adapter: str | None = Field(default=None, description="Name of a loaded LoRA adapter; None = base model.")
    seed: int | None = Field(default=None, description="Per-request sampling seed (sampling only).")
    json_schema: dict | None = Field(default=None, description="Constrain the output to JSON valid against this schema.")
    json_object: bool = Field(default=False, description="Constrain the output to a JSON object.")

    @property
    def structured(self) -> bool:
        return self.json_schema is not None or self.json_object


class Generation(BaseModel):
    """What one request produced, with the token accounting the service reports as usage."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = Field(description="'stop' (EOS or a stop string) or 'length'.")
    stop_reason: str | None = Field(
        default=None, description="The stop string that ended the text (not in it); None for EOS or length."
    )


def stop_string(reason: object) -> str | None:
    """An engine's stop reason when a stop *string* ended the text (vLLM gives a token id for stop tokens)."""
    return reason if isinstance(reason, str) else None


class Backend(ABC):
    """A generation engine holding one base model and any number of named LoRA adapters.

    Every engine answers one request as a coroutine on an event loop of its own, in a thread of
    its own (``_agenerate``, ``_astream``): vLLM's ``AsyncLLM`` batches whatever is in flight there,
    continuously. Callers use it from anywhere: ``agenerate`` / ``astream`` from another event loop
    (the HTTP service), ``generate`` as a blocking batch (eval, parity, CLI). Cancelling an awaiting
    caller (a client that went away) cancels the request in the engine.
    """

    name: str

    def __init__(self) -> None:
        self._lock = threading.RLock()  # adapter registry changes
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name=f"{self.name}-engine", daemon=True)
        self._loop_thread.start()

    # The engine's side: one request, on the engine loop -------------------------------------

    @abstractmethod
    async def _agenerate(self, req: GenerationRequest) -> Generation:
        """Generate one request to the end (validating it first: 4xx errors raise before any work)."""

    async def _astream(self, req: GenerationRequest) -> AsyncIterator[str | Generation]:
        """Text pieces as they come, then the whole Generation. Engines without streaming: one piece."""
        generation = await self._agenerate(req)
        yield generation.text
        yield generation

    # The callers' side ----------------------------------------------------------------------

    def run(self, coro: Coroutine):
        """Run a coroutine on the engine loop and wait for it (from a thread that is not that loop)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """All requests at once (the engine batches them); the i-th result answers the i-th request."""
        if not requests:
            return []
        self._ensure_open()
        self._check_adapters_known(requests)  # the whole batch fails before any work

        async def _all():
            return await asyncio.gather(*(self._agenerate(r) for r in requests))

        return self.run(_all())

    async def agenerate(self, req: GenerationRequest) -> Generation:
        """One request, awaited from another event loop; cancelling the caller aborts it."""
        self._ensure_open()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._agenerate(req), self._loop))

    async def astream(self, req: GenerationRequest) -> AsyncIterator[str | Generation]:
        """``_astream`` relayed to the caller's loop; closing or cancelling the iterator aborts the request."""
        self._ensure_open()
        caller = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        done = object()

        def put(item) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody is listening
                caller.call_soon_threadsafe(items.put_nowait, item)

        async def pump() -> None:
            try:
                async for item in self._astream(req):
                    put(item)
            except asyncio.CancelledError:
                put(done)
                raise
            except BaseException as exc:  # noqa: BLE001 - relayed to the caller, who raises it
                put(exc)
            else:
                put(done)

        task = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while True:
                item = await items.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            task.cancel()  # a no-op when it finished; otherwise the engine aborts the request

    @abstractmethod
    def load_adapter(self, name: str, path: Path) -> None:
        """Validate and load the adapter at ``path`` under ``name`` (replacing one of that name)."""

    @abstractmethod
    def unload_adapter(self, name: str) -> None:
        """Forget the adapter ``name``; NotFoundError if it is not loaded."""

    @abstractmethod
    def adapter_names(self) -> list[str]:
        """Names of the loaded adapters, sorted."""

    def close(self) -> None:
        """Release the engine (processes, memory) and stop its loop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._release()
            finally:
                self._stop_loop()

    def _stop_loop(self) -> None:
        """Cancel what still runs on the engine loop, stop it and its thread (also after a failed start)."""
        self._closed = True
        if self._loop.is_closed():
            return
        if threading.current_thread() is self._loop_thread or not self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            return

        async def _cancel_the_rest() -> None:
            # e.g. vLLM's output handler: left pending, it would keep the engine alive until exit.
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()

    @abstractmethod
    def _release(self) -> None:
        """Free what this engine holds; called once, under the lock, by :meth:`close`."""

    def _ensure_open(self) -> None:
        if self._closed:
            raise ConfigError(f"The {self.name} backend has been closed.")

    @property
    def unavailable(self) -> str | None:
        """Why the engine cannot serve right now (e.g. restarting after it died), or None."""
        return None

    @property
    def recovering(self) -> bool:
        """True while the engine is being rebuilt (``unavailable`` will clear by itself)."""
        return False

    # Shared helpers -------------------------------------------------------------------------

    def _check_adapters_known(self, requests: Iterable[GenerationRequest]) -> None:
        """Fail the whole batch before any work if one request names an unknown adapter."""
        known = set(self.adapter_names())
        for req in requests:
            if req.adapter is not None and req.adapter not in known:
                raise NotFoundError(_unknown_adapter_message(req.adapter, known), param="adapter")

    def _require_loaded(self, name: str) -> None:
        known = set(self.adapter_names())
        if name not in known:
            raise NotFoundError(_unknown_adapter_message(name, known), param="adapter")

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unknown_adapter_message(name: str, known: Iterable[str]) -> str:
    listed = ", ".join(sorted(known)) or "none loaded"
    return f"Unknown adapter '{name}'. Known adapters: {listed}."


def make_backend(settings: Settings, model_dir: Path) -> Backend:
    """Start the engine ``settings.backend`` names, on the base model folder ``model_dir``.

    Imports are local so that choosing the transformers backend never imports vLLM (~10 s and
    a fork-unsafe engine), and the reverse; ``remote`` talks HTTP to a `vllm serve` server at
    ``settings.vllm_url`` and imports neither engine.
    """
    if settings.backend == "vllm":
        from router.backends.vllm_local import VLLMBackend

        return VLLMBackend(settings, model_dir)
    if settings.backend == "remote":  # it refuses a missing vllm_url itself
        from router.backends.remote import RemoteVLLMBackend

        return RemoteVLLMBackend(settings, model_dir)
    if settings.backend == "transformers":
        from router.backends.hf import TransformersBackend

        return TransformersBackend(settings, model_dir)
    raise ValueError(f"unknown backend {settings.backend!r}")  # unreachable: Settings validates it
