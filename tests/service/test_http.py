"""End-to-end over HTTP: real uvicorn, real Chroma + MiniLM, real vLLM (CPU) with a LoRA."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

FACT_DOC = {
    "id": "zorbl-memo",
    "source": "memos/zorbl.txt",
    "text": "Internal memo. The secret launch code of the Zorbl project is PELICAN-42. "
    "It was chosen by the Zorbl steering group in May.",
}
DISTRACTORS = [
    {"id": "weather", "text": "The weather in the valley was mild this spring, with light rain in April."},
    {"id": "canteen", "text": "The canteen serves lentil soup on Mondays and grilled fish on Fridays."},
]


def _ask(client, question: str, **extra):
    body = {"model": "base", "messages": [{"role": "user", "content": question}], "max_tokens": 16, **extra}
    return client.post("/v1/chat/completions", json=body)


def _assert_openai_error(resp, status: int, needle: str):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert needle in err["message"], err["message"]
    return err


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_models_lists_base_and_adapters(client):
    data = client.get("/v1/models").json()
    ids = {m["id"]: m["kind"] for m in data["data"]}
    assert ids["base"] == "base"
    assert ids["tester"] == "adapter"


def test_ingest_then_retrieval_answer_cites_the_document(client):
    resp = client.post("/v1/documents", json={"collection": "http-test", "documents": [FACT_DOC, *DISTRACTORS]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["documents"] == 3

    resp = _ask(client, "What is the secret launch code of the Zorbl project?", retrieval=True,
                collection="http-test", top_k=2)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["citations"][0]["id"] == "zorbl-memo"
    assert data["citations"][0]["source"] == "memos/zorbl.txt"
    assert "PELICAN" in data["citations"][0]["text"]
    assert data["route"]["retrieval"] is True
    assert data["usage"]["completion_tokens"] > 0
    # The fact exists only in the ingested document: the model read it from the prompt.
    assert "PELICAN" in data["choices"][0]["message"]["content"].upper()


def test_without_retrieval_there_are_no_citations(client):
    data = _ask(client, "What is the capital of France?").json()
    assert data["citations"] == []
    assert data["route"] == {
        "name": "base",
        "adapter": None,
        "retrieval": False,
        "reason": "base model requested; no retrieval requested",
    }


def test_adapter_by_model_field_changes_the_answer(client):
    base = _ask(client, "Write a sentence about the sea.").json()
    tuned = _ask(client, "Write a sentence about the sea.", model="tester").json()
    assert tuned["route"]["adapter"] == "tester"
    assert tuned["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]


def test_unknown_adapter_is_404(client):
    err = _assert_openai_error(_ask(client, "hi", model="no-such-style"), 404, "no-such-style")
    assert err["type"] == "not_found_error"
    _assert_openai_error(_ask(client, "hi", adapter="nope"), 404, "nope")


def test_empty_message_list_is_400(client):
    resp = client.post("/v1/chat/completions", json={"model": "base", "messages": []})
    err = _assert_openai_error(resp, 400, "messages")
    assert err["type"] == "invalid_request_error"


def test_last_message_must_be_users(client):
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hi"}]})
    _assert_openai_error(resp, 400, "role 'user'")


def test_malformed_document_is_400_and_changes_nothing(client, live_router):
    store = live_router.store
    client.post("/v1/documents", json={"collection": "atomic-test", "documents": [FACT_DOC]}).raise_for_status()
    before = store.count("atomic-test")
    bad = {"collection": "atomic-test", "documents": [{**FACT_DOC, "text": "changed text"}, {"id": "x", "text": "  "}]}
    _assert_openai_error(client.post("/v1/documents", json=bad), 400, "text")
    assert store.count("atomic-test") == before
    hits = store.search("secret launch code", k=1, collection="atomic-test")
    assert "PELICAN" in hits[0].text  # the first, valid document of the bad batch was not written


def test_unsupported_options_are_refused(client):
    resp = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 2})
    _assert_openai_error(resp, 400, "n")


def test_unknown_path_is_openai_shaped_404(client):
    _assert_openai_error(client.get("/v1/nothing"), 404, "Not Found")


def test_metrics_count_requests(client):
    _ask(client, "Say hello.")
    text = client.get("/metrics").text
    assert 'ragtune_requests_total{route="base",status="2xx"}' in text  # test_concurrency checks values move
