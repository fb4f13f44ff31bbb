"""transformers + peft: the reference engine (and the fallback where vLLM is unavailable).

Correctness over speed: requests run one at a time (in a worker thread, so the engine loop stays
free), greedy decoding is ``generate(do_sample=False)``, and the model is
loaded from the saved folder exactly as vLLM loads it. (Casting a model with ``.to(bfloat16)``
would also cast its RoPE tables, which a load from disk keeps in float32: generations would
then drift from vLLM's. So never build this from an in-memory converted model.)
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
from pathlib import Path

from ragtune.errors import InvalidRequestError
from ragtune.settings import Settings
from router.adapters import AdapterInfo, validate_adapter_dir, validate_adapter_name
from router.backends.base import Backend, Generation, GenerationRequest

log = logging.getLogger(__name__)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, settings: Settings, model_dir: Path):
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.model_dir = Path(model_dir)
        self._torch = torch
        self._device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=getattr(torch, settings.dtype))
        model.to(self._device).eval()
        self._base = model
        self._peft = None  # a PeftModel wrapping _base once the first adapter is loaded
        # Public name -> (info, internal peft adapter name). Internal names are fresh per load so
        # a replacement is loaded beside the old one and the old one removed only on success.
        self._adapters: dict[str, tuple[AdapterInfo, str]] = {}
        self._seq = itertools.count(1)
        self._gen_lock: asyncio.Lock | None = None

    # Adapters -------------------------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        return sorted(self._adapters)

    def adapter_info(self, name: str):
        self._require_loaded(name)
        return self._adapters[name][0]

    def load_adapter(self, name: str, path: Path) -> None:
        from peft import PeftModel

        validate_adapter_name(name)
        info = validate_adapter_dir(Path(path), self.settings.max_lora_rank, name=name)
        with self._lock:
            self._ensure_open()
            internal = f"adapter_{next(self._seq)}"
            # autocast_adapter_dtype=False keeps the LoRA weights and their matmuls in the model
            # dtype (bf16), as vLLM runs them; peft's default upcasts them to float32, and that
            # difference alone flips a greedy token within 16 for some adapters.
            kwargs = {"adapter_name": internal, "is_trainable": False, "autocast_adapter_dtype": False}
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self._base, str(info.path), **kwargs)
                    self._peft.eval()
                else:
                    self._peft.load_adapter(str(info.path), **kwargs)
            except Exception as exc:
                raise InvalidRequestError(f"peft could not load adapter '{name}' from {info.path}: {exc}", param="path") from exc
            old = self._adapters.get(name)
            self._adapters[name] = (info, internal)
            if old is not None:
                self._peft.delete_adapter(old[1])

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            self._require_loaded(name)
            _, internal = self._adapters.pop(name)
            if self._adapters:
                self._peft.delete_adapter(internal)
            else:
                # peft cannot hold zero adapters: strip the LoRA layers and go back to the plain model.
                self._base = self._peft.unload()
                self._peft = None

    # Generation -----------------------------------------------------------------------------

    async def _agenerate(self, req: GenerationRequest) -> Generation:
        if req.structured:
            raise InvalidRequestError(
                "response_format (JSON / JSON schema constrained output) needs the vLLM backend; "
                "the transformers backend cannot constrain generation. Set RAGTUNE_BACKEND=vllm "
                "or drop response_format.",
                param="response_format",
            )
        self._check_adapters_known([req])
        if self._gen_lock is None:
            self._gen_lock = asyncio.Lock()  # on the engine loop: one generation at a time
        async with self._gen_lock:
            return await asyncio.to_thread(self._generate_locked, req)

    def _generate_locked(self, req: GenerationRequest) -> Generation:
        with self._lock:
            self._ensure_open()
            self._check_adapters_known([req])  # it may have been unloaded while we waited
            return self._generate_one(req)

    def _generate_one(self, req: GenerationRequest) -> Generation:
        torch = self._torch
        ids = self.tokenizer(req.prompt, return_tensors="pt")["input_ids"].to(self._device)
        prompt_len = int(ids.shape[1])
        if prompt_len >= self.settings.max_model_len:
            raise InvalidRequestError(
                f"Prompt is {prompt_len} tokens; the context is {self.settings.max_model_len} (max_model_len).",
                param="messages",
            )
        greedy = req.temperature == 0.0
        kwargs: dict = {
            "max_new_tokens": min(req.max_tokens, self.settings.max_model_len - prompt_len),
            "min_new_tokens": min(req.min_tokens, req.max_tokens) or None,
            "do_sample": not greedy,
            "pad_token_id": self.tokenizer.pad_token_id,
            # The model's generation_config may carry sampling defaults (top_k...); be explicit.
            "top_k": None,
        }
        if not greedy:
            kwargs.update(temperature=req.temperature, top_p=req.top_p)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        if req.stop:
            kwargs.update(stop_strings=req.stop, tokenizer=self.tokenizer)

        with torch.inference_mode():
            if req.adapter is None:
                if self._peft is None:
                    out = self._base.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
                else:
                    with self._peft.disable_adapter():
                        out = self._peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
            else:
                self._peft.set_adapter(self._adapters[req.adapter][1])
                out = self._peft.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)

        new_ids = out[0, prompt_len:].tolist()
        finish = "length"
        eos = self._eos_ids()
        if new_ids and new_ids[-1] in eos:
            finish = "stop"  # like vLLM, the EOS id stays in token_ids; decode drops it from the text
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        stop_reason = None
        found = [(text.find(s), s) for s in req.stop or [] if s in text]
        if found:
            cut, stop_reason = min(found)
            text, finish = text[:cut], "stop"
        return Generation(
            text=text,
            token_ids=new_ids,
            prompt_tokens=prompt_len,
            completion_tokens=len(new_ids),
            finish_reason=finish,
            stop_reason=stop_reason,
        )

    def _eos_ids(self) -> set[int]:
        eos = self._base.generation_config.eos_token_id
        if eos is None:
            return set()
        return set(eos) if isinstance(eos, list) else {eos}

    # Lifecycle ------------------------------------------------------------------------------

    def _release(self) -> None:
        self._peft = None
        self._base = None
        gc.collect()
