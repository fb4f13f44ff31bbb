"""Named routes over HTTP: real uvicorn, real Chroma + MiniLM, the session's vLLM with the shipped adapters.

This module overrides conftest's ``service_settings`` and ``live_router`` so the shared ``server``
and ``client`` fixtures serve data/routes.example.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ("e2e-json", "bible-asv")
RESTAURANT = {
    "id": "alimentum",
    "text": "Alimentum is an Italian restaurant in the city centre near the river; it is not family-friendly.",
}


@pytest.fixture(scope="module")
def service_settings(tmp_path_factory, base_model_dir):
    from ragtune.settings import Settings

    return Settings(
        home=tmp_path_factory.mktemp("service-routes"),
        base_model=str(base_model_dir),
        routes_file=REPO / "data/routes.example.yaml",
        retrieval_threshold=0.35,
    )


@pytest.fixture(scope="module")
def live_router(service_settings, vllm_backend):
    from retriever.store import FactStore
    from router.factory import build_router

    for name in SHIPPED:
        vllm_backend.load_adapter(name, REPO / "adapters" / name)
    try:
        store = FactStore(service_settings)
        store.upsert([RESTAURANT], collection="restaurants")
        yield build_router(service_settings, backend=vllm_backend, store=store)
    finally:
        for name in SHIPPED:  # the engine is shared with other test folders
            if name in vllm_backend.adapter_names():
                vllm_backend.unload_adapter(name)


def _ask(client, model: str, question: str, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 12, **extra}
    return client.post("/v1/chat/completions", json=body)


def test_models_list_routes(client, service_settings):
    data = client.get("/v1/models").json()["data"]
    kinds = {m["id"]: (m["kind"], m["root"]) for m in data}
    assert kinds["base"][0] == "base"
    assert kinds["e2e-json"][0] == "adapter" and kinds["bible-asv"][0] == "adapter"
    for route in ("restaurant-json", "facts", "ye-olde"):
        assert kinds[route] == ("route", service_settings.base_model)


def test_route_without_retrieval_uses_its_adapter(client):
    resp = _ask(client, "ye-olde", "Rewrite this Bible verse in the style of the American Standard Version (1901).\n\n"
                "In the beginning God made the heaven and the earth.")
    assert resp.status_code == 200, resp.text
    route = resp.json()["route"]
    assert (route["name"], route["adapter"], route["retrieval"]) == ("ye-olde", "bible-asv", False)
    assert resp.json()["citations"] == []


def test_auto_route_retrieves_for_a_matching_question_and_says_why(client):
    resp = _ask(client, "restaurant-json", "Alimentum is an Italian restaurant in the city centre.", max_tokens=24)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    route = data["route"]
    assert (route["name"], route["adapter"], route["retrieval"]) == ("restaurant-json", "e2e-json", True)
    assert "threshold 0.350" in route["reason"] and ">=" in route["reason"], route["reason"]
    assert data["citations"][0]["id"] == "alimentum"
    assert data["choices"][0]["message"]["content"].lstrip().startswith("{")  # the route's json_object default


def test_auto_route_skips_retrieval_below_threshold(client):
    resp = _ask(client, "restaurant-json", "How many moons does Jupiter have?")
    assert resp.status_code == 200, resp.text
    route = resp.json()["route"]
    assert route["retrieval"] is False and "< threshold 0.350" in route["reason"], route["reason"]
    assert resp.json()["citations"] == []


def test_request_overrides_route_retrieval(client):
    resp = _ask(client, "restaurant-json", "Alimentum is an Italian restaurant.", retrieval=False,
                response_format={"type": "text"})
    assert resp.status_code == 200, resp.text
    route = resp.json()["route"]
    assert route["retrieval"] is False and "retrieval off (requested)" in route["reason"]


def test_request_auto_on_base_and_streamed_route(client):
    resp = _ask(client, "base", "Where is Alimentum?", retrieval="auto", collection="restaurants", stream=True)
    assert resp.status_code == 200, resp.text
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
    route = next(e["route"] for e in events if e.get("route"))
    assert route["name"] == "base" and route["retrieval"] is True and "retrieval auto (requested)" in route["reason"]


def test_bad_retrieval_value_and_unknown_model_are_4xx(client):
    resp = _ask(client, "base", "Hi", retrieval="sometimes")
    assert resp.status_code == 400, resp.text
    resp = _ask(client, "no-such-route", "Hi")
    assert resp.status_code == 404
    assert "restaurant-json" in resp.json()["error"]["message"]  # routes are listed among the choices
