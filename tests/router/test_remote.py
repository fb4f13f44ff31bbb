"""RemoteVLLMBackend without a server: URL handling, configuration and HTTP error mapping
(httpx.MockTransport). The real-server tests are tests/service/test_remote_api.py."""

from __future__ import annotations

import socket

import httpx
import pytest

from ragtune.errors import ConfigError, InvalidRequestError, NotFoundError
from router.backends.base import GenerationRequest, make_backend
from router.backends.remote import BackendUnavailableError, RemoteBackendError, RemoteVLLMBackend, server_root

MODELS = {"object": "list", "data": [{"id": "base", "parent": None, "root": "/m", "max_model_len": 1024}]}


@pytest.mark.parametrize("url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"])
def test_server_root_accepts_with_or_without_v1(url):
    assert server_root(url) == "http://h:8000"


def test_make_backend_needs_the_url(settings):
    with pytest.raises(ConfigError, match="RAGTUNE_VLLM_URL"):
        make_backend(settings.model_copy(update={"backend": "remote"}), settings.base_model)


def test_unreachable_server_is_503_naming_the_url(settings, base_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = settings.model_copy(update={"backend": "remote", "vllm_url": f"http://127.0.0.1:{port}/v1"})
    with pytest.raises(BackendUnavailableError, match=f"127.0.0.1:{port}") as info:
        RemoteVLLMBackend(remote, base_model_dir, wait_s=0)
    assert info.value.status_code == 503


def _backend(settings, base_model_dir, completions):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=MODELS)
        if request.url.path == "/v1/completions":
            return completions(request)
        return httpx.Response(404, json={"error": {"message": "no route", "type": "NotFoundError", "code": 404}})

    remote = settings.model_copy(update={"backend": "remote", "vllm_url": "http://vllm.test/v1"})
    return RemoteVLLMBackend(remote, base_model_dir, transport=httpx.MockTransport(handler), wait_s=0)


def test_request_body_and_usage(settings, base_model_dir):
    import json

    seen = []

    def completions(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={
            "choices": [{"index": 0, "text": " Berlin", "token_ids": [15687], "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 13, "completion_tokens": 1, "total_tokens": 14},
        })

    backend = _backend(settings, base_model_dir, completions)
    out = backend.generate([GenerationRequest(prompt="Hi", max_tokens=5, stop=["\n"], json_schema={"type": "object"})])
    assert out[0].text == " Berlin" and out[0].prompt_tokens == 13 and out[0].completion_tokens == 1
    body = seen[0]
    assert body["model"] == "base" and body["temperature"] == 0.0 and body["stop"] == ["\n"]
    assert body["prompt"][0] == 2  # token ids with <bos>
    assert body["structured_outputs"] == {"json": {"type": "object"}, "disable_any_whitespace": True}
    assert "seed" not in body  # greedy


@pytest.mark.parametrize(
    "status, error",
    [(400, InvalidRequestError), (422, InvalidRequestError), (404, NotFoundError), (500, RemoteBackendError),
     (503, BackendUnavailableError)],
)
def test_server_errors_are_mapped(settings, base_model_dir, status, error):
    def completions(request):
        return httpx.Response(status, json={"error": {"message": "server says no", "type": "X", "code": status}})

    backend = _backend(settings, base_model_dir, completions)
    with pytest.raises(error, match="server says no"):
        backend.generate([GenerationRequest(prompt="Hi", max_tokens=2)])
