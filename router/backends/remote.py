"""A remote vLLM OpenAI server (``vllm serve --enable-lora``) as the generation backend.

Generation goes through ``/v1/completions`` (the router renders the whole prompt; the base model
has no chat template): the prompt is tokenised here with the base model's tokenizer and sent as
token ids, so both in-process engines and this one see identical ids, and an over-long prompt is
a clear 400 before any network call. ``model`` is the served base model's name (the first model
``/v1/models`` lists without a parent) or the adapter's name. A batch is sent as concurrent
requests (a small thread pool) so the server's scheduler batches them.

Adapters are validated locally (``router.adapters``) and then loaded into the server with
``POST /v1/load_lora_adapter`` -- the server must run with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``
and must see the adapter folder at the same path (share the folder, as docker-compose.yml does).

LoRA slots are NOT managed by ragtune here. The in-process backend keeps vLLM's last LoRA slot
empty (see ``slots.py``: on vLLM's CPU LoRA path, with every slot in use, requests with *no*
adapter batched with adapter requests silently get the last slot's adapter applied). A remote
server schedules its own slots, and ``/v1/unload_lora_adapter`` only forgets the name: the
engine keeps the weights in their slot until it needs the room. So start the server with
``--max-loras`` >= (adapters it will serve, counting each reload under a new name) + 1 and keep
``RAGTUNE_MAX_LORAS`` equal to it: this backend refuses (409) to load more distinct adapter names
than that leaves safe.

Replacing a loaded adapter reloads it in place on the server (same LoRA id, same slot). vLLM does
not invalidate prefix-cache blocks computed with the old weights, so put changed weights in a new
folder (or run the server with ``--no-enable-prefix-caching``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from ragtune.errors import (
    BackendUnavailableError,
    ConfigError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RagtuneError,
)
from ragtune.settings import Settings
from router.adapters import AdapterInfo, validate_adapter_dir, validate_adapter_name
from router.backends.base import Backend, Generation, GenerationRequest, stop_string

log = logging.getLogger(__name__)

#: Seconds to wait for the server's /health at start-up (e.g. when both start in docker compose).
WAIT_ENV = "RAGTUNE_VLLM_WAIT_S"
_MAX_CONNECTIONS = 64  # concurrent requests to the server (each its own connection)


class RemoteBackendError(RagtuneError):
    """The remote generation server failed a request (its 5xx)."""

    status_code = 502
    error_type = "server_error"


def server_root(url: str) -> str:
    """``http://h:8000/v1/`` -> ``http://h:8000``: the URL may name the OpenAI /v1 prefix or not."""
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


class RemoteVLLMBackend(Backend):
    name = "remote"

    def __init__(
        self,
        settings: Settings,
        model_dir: Path,
        *,
        timeout_s: float = 600.0,
        wait_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if not settings.vllm_url:
            raise ConfigError("backend=remote needs the server's URL: set RAGTUNE_VLLM_URL (e.g. http://127.0.0.1:8000/v1).")
        super().__init__()
        self.settings = settings
        self.model_dir = Path(model_dir)
        self.url = server_root(settings.vllm_url)
        timeout = httpx.Timeout(timeout_s, connect=10.0)
        # Admin calls (health, models, adapters) are rare and blocking; generation goes through one
        # async client on the engine loop, whose connections are reused across requests.
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)
        self._aclient = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=transport,
            limits=httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS),
        )
        self._adapters: dict[str, AdapterInfo] = {}
        self._ever_loaded: set[tuple[str, str]] = set()  # (name, path) pairs sent to the server
        try:
            self._wait_healthy(float(os.environ.get(WAIT_ENV, "0")) if wait_s is None else wait_s)
            self.base_name, self.server_max_model_len, self._server_loras = self._read_models()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        except BaseException:
            self._client.close()
            self._stop_loop()
            raise
        log.info("Remote vLLM at %s serves base model '%s' (max_model_len %s)", self.url, self.base_name,
                 self.server_max_model_len)

    # HTTP -----------------------------------------------------------------------------------

    def _wait_healthy(self, wait_s: float) -> None:
        deadline = time.monotonic() + max(wait_s, 0.0)
        while True:
            try:
                r = self._client.get("/health", timeout=5.0)
                if r.status_code == 200:
                    return
                problem = f"/health answered {r.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise BackendUnavailableError(
                    f"The vLLM server at {self.url} is not reachable ({problem}). Start it "
                    "(python -m vllm.entrypoints.openai.api_server --enable-lora ...) or fix RAGTUNE_VLLM_URL."
                )
            time.sleep(1.0)

    def _call(self, method: str, path: str, *, json_body: dict | None = None, param: str | None = None) -> httpx.Response:
        try:
            r = self._client.request(method, path, json=json_body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(r, path, param)
        return r

    def _unreachable(self, exc: httpx.TransportError) -> BackendUnavailableError:
        return BackendUnavailableError(f"The vLLM server at {self.url} is not reachable ({type(exc).__name__}: {exc}).")

    def _raise_for(self, r: httpx.Response, path: str, param: str | None) -> None:
        if r.status_code < 400:
            return
        message = _error_message(r)
        where = f"vLLM server {self.url}{path}"
        if r.status_code == 404:
            raise NotFoundError(f"{where}: {message}", param=param)
        if r.status_code in (400, 422):
            if param == "response_format":
                raise InvalidRequestError(f"{where} refused the response_format: {message}", param=param)
            raise InvalidRequestError(f"{where}: {message}", param=param)
        if r.status_code == 503:
            raise BackendUnavailableError(f"{where} is unavailable: {message}")
        raise RemoteBackendError(f"{where} failed with {r.status_code}: {message}")

    def _read_models(self) -> tuple[str, int | None, dict[str, str]]:
        data = self._call("GET", "/v1/models").json().get("data", [])
        bases = [m for m in data if not m.get("parent")]
        if not bases:
            raise ConfigError(f"The vLLM server at {self.url} lists no base model on /v1/models.")
        loras = {m["id"]: str(m.get("root") or "") for m in data if m.get("parent")}
        return bases[0]["id"], bases[0].get("max_model_len"), loras

    # Adapters -------------------------------------------------------------------------------

    def adapter_names(self) -> list[str]:
        return sorted(self._adapters)

    def adapter_info(self, name: str) -> AdapterInfo:
        self._require_loaded(name)
        return self._adapters[name]

    def server_adapters(self) -> list[str]:
        """Adapter names the server itself lists now (including ones loaded by others)."""
        return sorted(self._read_models()[2])

    def load_adapter(self, name: str, path: Path) -> None:
        validate_adapter_name(name)
        info = validate_adapter_dir(Path(path), self.settings.max_lora_rank, name=name)
        with self._lock:
            self._ensure_open()
            if name == self.base_name:
                raise InvalidRequestError(f"'{name}' is the served base model's name; choose another adapter name.",
                                          param="name")
            key = (name, str(info.path))
            names = {n for n, _ in self._ever_loaded}
            safe = self.settings.max_loras - 1
            if name not in names and len(names) >= safe:
                # The server never frees a slot (unloading only forgets the name): one more adapter
                # could be applied to no-adapter requests (vLLM CPU LoRA slot leak). Refuse instead.
                raise ConflictError(
                    f"The vLLM server at {self.url} has {safe} usable LoRA slots (max_loras - 1) and they have held "
                    f"{len(names)} adapters: loading a further one could leak an adapter into no-adapter answers. "
                    "Reload an existing name, or restart the server with a larger --max-loras and RAGTUNE_MAX_LORAS.",
                    param="name", code="lora_slots_full")
            server_path = self._server_loras.get(name)
            if server_path == str(info.path) and name not in self._adapters:
                # Already on the server from the same folder (e.g. its --lora-modules): adopt it
                # rather than reloading it in place (which would not invalidate prefix-cache blocks).
                log.info("Adapter %s is already served from %s; using it", name, info.path)
            else:
                # In place when the server knows the name: the adapter keeps its LoRA id (and slot).
                self._call("POST", "/v1/load_lora_adapter", param="path",
                           json_body={"lora_name": name, "lora_path": str(info.path),
                                      "load_inplace": server_path is not None})
            self._server_loras[name] = str(info.path)
            self._adapters[name] = info
            self._ever_loaded.add(key)
            log.info("Loaded adapter %s (rank %d) from %s into %s", name, info.rank, info.path, self.url)

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            self._require_loaded(name)
            self._ensure_open()
            try:
                self._call("POST", "/v1/unload_lora_adapter", json_body={"lora_name": name}, param="name")
            except NotFoundError:
                log.warning("Adapter %s was already gone from the server at %s", name, self.url)
            self._adapters.pop(name, None)
            self._server_loras.pop(name, None)

    # Generation -----------------------------------------------------------------------------

    async def _agenerate(self, req: GenerationRequest) -> Generation:
        self._check_adapters_known([req])
        body = self._body(req)  # tokenises: a too-long prompt fails here
        r = await self._acall("/v1/completions", body, _param(req))
        payload = r.json()
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        token_ids = list(choice.get("token_ids") or [])
        return Generation(
            text=choice.get("text") or "",
            token_ids=token_ids,
            prompt_tokens=int(usage.get("prompt_tokens", len(body["prompt"]))),
            completion_tokens=int(usage.get("completion_tokens", len(token_ids))),
            finish_reason=choice.get("finish_reason") or "stop",
            stop_reason=stop_string(choice.get("stop_reason")),
        )

    async def _acall(self, path: str, body: dict, param: str | None) -> httpx.Response:
        try:
            r = await self._aclient.post(path, json=body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(r, path, param)
        return r

    def _tokenize(self, req: GenerationRequest) -> list[int]:
        ids = list(self._tokenizer(req.prompt)["input_ids"])
        limit = self._max_model_len()
        if len(ids) >= limit:
            raise InvalidRequestError(
                f"Prompt is {len(ids)} tokens; the engine's context is {limit} "
                "(max_model_len) including the answer. Shorten the prompt or retrieve fewer passages.",
                param="messages",
            )
        return ids

    def _max_model_len(self) -> int:
        if self.server_max_model_len:
            return min(int(self.server_max_model_len), self.settings.max_model_len)
        return self.settings.max_model_len

    def _body(self, req: GenerationRequest, *, stream: bool = False) -> dict:
        prompt = self._tokenize(req)
        greedy = req.temperature == 0.0
        body: dict = {
            "model": req.adapter or self.base_name,
            "prompt": prompt,  # ids already carry <bos>: the server adds no special tokens to ids
            # Clamp to the context left, as the in-process backend does.
            "max_tokens": min(req.max_tokens, self._max_model_len() - len(prompt)),
            "temperature": 0.0 if greedy else req.temperature,
            "top_p": 1.0 if greedy else req.top_p,
            "return_token_ids": True,
        }
        if req.min_tokens:
            body["min_tokens"] = min(req.min_tokens, req.max_tokens)
        if req.stop:
            body["stop"] = req.stop
        if req.seed is not None and not greedy:
            body["seed"] = req.seed
        if req.structured:
            # Same constraint as the in-process backend (xgrammar; no free whitespace).
            so: dict = {"disable_any_whitespace": True}
            if req.json_schema is not None:
                so["json"] = req.json_schema
            else:
                so["json_object"] = True
            body["structured_outputs"] = so
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    # Streaming ------------------------------------------------------------------------------

    async def _astream(self, req: GenerationRequest) -> AsyncIterator[str | Generation]:
        """Stream one request over SSE; closing the stream closes the connection, which makes the
        server abort the request."""
        self._check_adapters_known([req])
        body = self._body(req, stream=True)
        try:
            request = self._aclient.build_request("POST", "/v1/completions", json=body)
            response = await self._aclient.send(request, stream=True)
        except httpx.TransportError as exc:
            raise BackendUnavailableError(
                f"The vLLM server at {self.url} is not reachable ({type(exc).__name__}: {exc})."
            ) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                self._raise_for(response, "/v1/completions", _param(req))
            text, token_ids, finish, stop_reason, usage = "", [], None, None, {}
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RemoteBackendError(f"vLLM server stream failed: {_error_text(chunk['error'])}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    piece = choice.get("text") or ""
                    token_ids.extend(choice.get("token_ids") or [])
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                        stop_reason = stop_string(choice.get("stop_reason"))
                    if piece:
                        text += piece
                        yield piece
            yield Generation(
                text=text,
                token_ids=token_ids,
                prompt_tokens=int(usage.get("prompt_tokens", len(body["prompt"]))),
                completion_tokens=int(usage.get("completion_tokens", len(token_ids))),
                finish_reason=finish or "stop",
                stop_reason=stop_reason,
            )
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"The vLLM server dropped the stream ({type(exc).__name__}: {exc}).") from exc
        finally:
            await response.aclose()

    # Lifecycle ------------------------------------------------------------------------------

    def _release(self) -> None:
        """Close the connections. The server keeps running (and keeps its adapters)."""
        self.run(self._aclient.aclose())
        self._client.close()


def _param(req: GenerationRequest) -> str | None:
    return "response_format" if req.structured else None


def _error_text(err) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err)


def _error_message(r: httpx.Response) -> str:
    try:
        payload = r.json()
    except ValueError:
        return r.text.strip()[:500] or r.reason_phrase
    if isinstance(payload, dict):
        if "error" in payload:
            return _error_text(payload["error"])
        if "message" in payload:
            return str(payload["message"])
        if "detail" in payload:
            return str(payload["detail"])
    return str(payload)[:500]
