"""The HTTP API over the remote backend: a real `vllm serve`-style OpenAI server (subprocess, CPU),
a real uvicorn around a Router whose backend is RemoteVLLMBackend.

The module overrides ``live_router`` (tests/service/conftest.py), so the shared ``server`` and
``client`` fixtures -- and the API tests imported below from the other modules -- run unchanged
against the remote engine. The server starts once for the module (~60-80 s on CPU, ~6.5 GiB).

Slots: the server runs with --max-loras 3 and this module loads two distinct adapters into it
(``tester`` and ``hot``), so one slot always stays empty (the CPU LoRA slot leak, see
router/backends/remote.py). Keep it that way when adding tests here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import PARITY_PROMPT
from tests.router.test_structured import PERSON_SCHEMA, check_person
from tests.service.test_http import (  # noqa: F401  (collected here, run against the remote backend)
    test_adapter_by_model_field_changes_the_answer,
    test_ingest_then_retrieval_answer_cites_the_document,
    test_models_lists_base_and_adapters,
    test_unknown_adapter_is_404,
    test_without_retrieval_there_are_no_citations,
)
from tests.service.test_structured_stream import (  # noqa: F401
    test_bad_response_format_is_400,
    test_json_object_response_is_an_object,
    test_json_schema_response_validates,
    test_stream_errors_before_streaming_are_plain_json,
    test_stream_sends_chunks_then_done,
    test_stream_with_schema_and_adapter,
)

pytestmark = pytest.mark.slow

STARTUP_S = 240
PARITY_TOKENS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="module")
def remote_server(tmp_path_factory, base_model_dir):
    """Start the vLLM OpenAI server on a free localhost port; yield its /v1 URL; SIGTERM it after."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("remote-vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(base_model_dir),
           "--served-model-name", "base", "--enable-lora", "--max-lora-rank", "16", "--max-loras", "3",
           "--dtype", "bfloat16", "--max-model-len", "1024", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{_tail(log_path)}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - start > STARTUP_S:
                pytest.fail(f"vLLM server not healthy after {STARTUP_S} s:\n{_tail(log_path)}")
            time.sleep(1)
        print(f"\nremote vLLM server ready in {time.monotonic() - start:.0f} s on port {port}")
        yield f"{url}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the api server and its engine-core child
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def remote_settings(tmp_path_factory, base_model_dir, remote_server):
    from ragtune.settings import Settings

    return Settings(home=tmp_path_factory.mktemp("remote"), base_model=str(base_model_dir), backend="remote",
                    vllm_url=remote_server)


@pytest.fixture(scope="module")
def remote_backend(remote_settings, base_model_dir):
    from router.backends.base import make_backend
    from router.backends.remote import RemoteVLLMBackend

    backend = make_backend(remote_settings, base_model_dir)
    assert isinstance(backend, RemoteVLLMBackend) and backend.base_name == "base"
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def service_settings(remote_settings):
    return remote_settings


@pytest.fixture(scope="module")
def live_router(remote_settings, remote_backend, lora_adapter_dir):
    """Overrides tests/service/conftest.py's: the same Router, on the remote backend."""
    from retriever.store import FactStore
    from router.factory import build_router

    remote_backend.load_adapter("tester", lora_adapter_dir)
    return build_router(remote_settings, backend=remote_backend, store=FactStore(remote_settings))


# --- Backend-level checks -------------------------------------------------------------------------


def _greedy(prompt: str, adapter: str | None = None, n: int = PARITY_TOKENS):
    from router.backends.base import GenerationRequest

    return GenerationRequest(prompt=prompt, max_tokens=n, temperature=0.0, adapter=adapter)


@pytest.fixture(scope="module")
def base_reference(hf_backend) -> list[int]:
    """Greedy tokens of PARITY_PROMPT from the transformers reference engine."""
    return hf_backend.generate([_greedy(PARITY_PROMPT)])[0].token_ids


def test_base_greedy_matches_the_reference(live_router, remote_backend, base_reference):
    out = remote_backend.generate([_greedy(PARITY_PROMPT)])[0]
    assert out.token_ids[:PARITY_TOKENS] == base_reference[:PARITY_TOKENS]
    assert out.completion_tokens == len(out.token_ids) == PARITY_TOKENS and out.finish_reason == "length"
    assert out.prompt_tokens == len(remote_backend._tokenize(_greedy(PARITY_PROMPT)))


def test_mixed_batch_keeps_base_requests_on_the_base_model(live_router, remote_backend, base_reference):
    reqs = [_greedy(PARITY_PROMPT), _greedy(PARITY_PROMPT, "tester"), _greedy(PARITY_PROMPT),
            _greedy(PARITY_PROMPT, "tester")]
    outs = remote_backend.generate(reqs)
    assert [o.token_ids for o in outs[0::2]] == [base_reference[:PARITY_TOKENS]] * 2
    assert outs[1].token_ids == outs[3].token_ids != base_reference[:PARITY_TOKENS]


def test_stop_strings_and_usage(live_router, remote_backend):
    from router.backends.base import GenerationRequest

    full = remote_backend.generate([_greedy(PARITY_PROMPT)])[0]
    word = full.text.split()[1]  # e.g. " Berlin" -> stop at the second word
    out = remote_backend.generate([GenerationRequest(prompt=PARITY_PROMPT, max_tokens=16, stop=[word])])[0]
    assert word not in out.text and full.text.startswith(out.text)
    assert out.finish_reason == "stop" and out.completion_tokens < 16


def test_sampling_with_a_seed_is_reproducible(live_router, remote_backend):
    from router.backends.base import GenerationRequest

    req = GenerationRequest(prompt=PARITY_PROMPT, max_tokens=12, temperature=1.0, seed=7)
    a, b = remote_backend.generate([req, req])
    assert a.token_ids == b.token_ids


def test_json_schema_through_the_backend(live_router, remote_backend):
    from router.backends.base import GenerationRequest

    req = GenerationRequest(prompt="Describe Ada, 36 years old, as JSON: ", max_tokens=48, json_schema=PERSON_SCHEMA)
    check_person(json.loads(remote_backend.generate([req])[0].text))


def test_unknown_adapter_and_unreachable_server_errors(live_router, remote_backend, remote_settings, base_model_dir):
    from ragtune.errors import NotFoundError
    from router.backends.remote import BackendUnavailableError, RemoteVLLMBackend

    with pytest.raises(NotFoundError, match="nope"):
        remote_backend.generate([_greedy("hi", "nope")])
    with pytest.raises(NotFoundError, match="nope"):
        remote_backend.unload_adapter("nope")
    dead = remote_settings.model_copy(update={"vllm_url": f"http://127.0.0.1:{_free_port()}/v1"})
    with pytest.raises(BackendUnavailableError, match="127.0.0.1") as info:
        RemoteVLLMBackend(dead, base_model_dir, wait_s=0)
    assert info.value.status_code == 503


# --- Hot-loading over HTTP --------------------------------------------------------------------------


def test_hot_load_serves_differs_from_base_then_delete_404(client, remote_backend, service_settings):
    import shutil

    from tests.conftest import REPO

    body = {"messages": [{"role": "user", "content": "Write a sentence about the sea."}], "max_tokens": 16}
    shutil.copytree(REPO / "adapters" / "bible-asv", service_settings.resolved_adapters_dir / "hot",
                    ignore=shutil.ignore_patterns("report.html"), dirs_exist_ok=True)
    resp = client.post("/v1/adapters", json={"name": "hot"})
    assert resp.status_code == 200, resp.text
    assert "hot" in remote_backend.server_adapters()  # really on the server
    assert "hot" in {m["id"] for m in client.get("/v1/models").json()["data"]}

    base = client.post("/v1/chat/completions", json={**body, "model": "base"}).json()
    hot = client.post("/v1/chat/completions", json={**body, "model": "hot"})
    assert hot.status_code == 200, hot.text
    assert hot.json()["route"]["adapter"] == "hot"
    assert hot.json()["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]

    assert client.delete("/v1/adapters/hot").status_code == 200
    assert "hot" not in remote_backend.server_adapters()
    gone = client.post("/v1/chat/completions", json={**body, "model": "hot"})
    assert gone.status_code == 404 and "hot" in gone.json()["error"]["message"]
    assert client.delete("/v1/adapters/hot").status_code == 404


def test_a_further_adapter_name_than_the_servers_free_slots_is_409(client, remote_backend, service_settings):
    # max_loras 3 leaves 2 usable slots; "tester" and "hot" have used them (the server never frees one).
    import shutil

    from tests.conftest import REPO

    shutil.copytree(REPO / "adapters" / "e2e-json", service_settings.resolved_adapters_dir / "third",
                    ignore=shutil.ignore_patterns("report.html"), dirs_exist_ok=True)
    resp = client.post("/v1/adapters", json={"name": "third"})
    assert resp.status_code == 409, resp.text
    err = resp.json()["error"]
    assert err["code"] == "lora_slots_full" and "--max-loras" in err["message"]
    assert "third" not in remote_backend.server_adapters()
