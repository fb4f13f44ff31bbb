"""The vLLM engine-core process killed mid-request: the service says so, rebuilds the engine with
its adapters, and serves again; an eval arm caught by it retries once instead of failing the run.

Uses the session's engine (it is rebuilt in place, so later tests get a working one).
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import PARITY_PROMPT, soak_record
from tests.service.conftest import serve

pytestmark = pytest.mark.slow

BACK_S = 300  # a CPU engine starts in ~70 s


def _engine_core(backend) -> psutil.Process:
    me = psutil.Process()
    cores = [p for p in me.children(recursive=True) if "EngineCore" in " ".join(p.cmdline() + [p.name()])]
    assert cores, [p.name() for p in me.children(recursive=True)]
    return cores[0]


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + BACK_S
    while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the engine did not come back"
        time.sleep(1)


def _body(model="base", max_tokens=8, **extra):
    return {"model": model, "messages": [{"role": "user", "content": PARITY_PROMPT}], "max_tokens": max_tokens, **extra}


def test_a_killed_engine_is_reported_rebuilt_and_serves_again(live_router, service_settings, vllm_backend):
    from service.app import create_app

    with serve(create_app(service_settings, router=live_router)) as base, httpx.Client(base_url=base, timeout=300) as c:
        before = {m: c.post("/v1/chat/completions", json=_body(m)).json()["choices"][0]["message"]["content"]
                  for m in ("base", "tester")}
        restarts = vllm_backend.restarts

        with c.stream("POST", "/v1/chat/completions", json=_body(max_tokens=1000, min_tokens=1000, stream=True)) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            for line in lines:
                if '"content":"' in line and '"content":""' not in line:
                    break
            _engine_core(vllm_backend).send_signal(signal.SIGKILL)
            rest = "\n".join(lines)
        assert "engine_restarting" in rest or "service_unavailable" in rest, rest[-500:]  # the stream says why

        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/chat/completions", json=_body())
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert r.json()["error"]["code"] == "engine_restarting"

        died = time.monotonic()
        _wait_ready(base)
        soak_record("engine-core killed mid-stream", seconds_unready=round(time.monotonic() - died, 1))
        assert vllm_backend.restarts == restarts + 1
        after = {m: c.post("/v1/chat/completions", json=_body(m)).json()["choices"][0]["message"]["content"]
                 for m in ("base", "tester")}
        assert after == before  # same greedy answers: the adapter was registered again


def test_an_eval_arm_caught_by_engine_death_retries_once(live_router, vllm_backend):
    from eval.arms import plan_arm, run_arm
    from eval.suites import resolve_suites

    suite = resolve_suites(["format"])[0]
    items = suite.items(limit=6)
    plan = plan_arm("base", None)
    killer = threading.Timer(3.0, lambda: _engine_core(vllm_backend).send_signal(signal.SIGKILL))
    restarts = vllm_backend.restarts
    killer.start()
    try:
        run = run_arm(live_router, suite, items, plan, concurrency=1)
    finally:
        killer.cancel()
    assert vllm_backend.restarts == restarts + 1  # it did die and come back mid-arm
    assert len(run.answers) == len(items) and all(a.completion_tokens > 0 for a in run.answers)


def test_an_arm_whose_engine_cannot_come_back_fails_alone():
    from eval.arms import wait_until_serving

    class GaveUp:  # what a backend reports when its rebuild failed
        unavailable = "The engine died and could not be restarted"
        recovering = False

    assert wait_until_serving(GaveUp(), timeout_s=5, poll_s=0.01) is False
