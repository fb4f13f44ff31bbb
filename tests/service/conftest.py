"""A real HTTP server (uvicorn on a free localhost port) around the session's vLLM engine."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest
import uvicorn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service_settings(tmp_path_factory, base_model_dir):
    from ragtune.settings import Settings

    return Settings(home=tmp_path_factory.mktemp("service"), base_model=str(base_model_dir))


@pytest.fixture(scope="module")
def live_router(service_settings, vllm_backend, lora_adapter_dir):
    from retriever.store import FactStore
    from router.factory import build_router

    vllm_backend.load_adapter("tester", lora_adapter_dir)
    yield build_router(service_settings, backend=vllm_backend, store=FactStore(service_settings))
    vllm_backend.unload_adapter("tester")  # the engine is shared with other test folders


@contextlib.contextmanager
def serve(app):
    """Run ``app`` on a free localhost port in a thread; yield its base URL; stop it afterwards."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        raise RuntimeError("test server did not come up")
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(live_router, service_settings):
    """Yield the base URL of a running server; stop it afterwards (the engine stays up)."""
    from service.app import create_app

    with serve(create_app(service_settings, router=live_router)) as base:
        yield base


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server, timeout=300) as c:
        yield c
