"""response_format and stream=true over HTTP (real uvicorn, real vLLM on CPU)."""

from __future__ import annotations

import json

import pytest

from tests.router.test_structured import PERSON_SCHEMA, check_person

pytestmark = pytest.mark.slow

QUESTION = "Describe a person called Ada who is 36 years old, as JSON."


def _body(**extra):
    return {"model": "base", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 48, **extra}


def _events(resp) -> list[dict | str]:
    """Parse an SSE body into JSON payloads, and the literal '[DONE]'."""
    assert resp.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in resp.text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block.removeprefix("data: ")
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_json_schema_response_validates(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}}
    resp = client.post("/v1/chat/completions", json=_body(response_format=fmt))
    assert resp.status_code == 200, resp.text
    check_person(json.loads(resp.json()["choices"][0]["message"]["content"]))


def test_json_object_response_is_an_object(client):
    body = _body(response_format={"type": "json_object"}, max_tokens=200)
    body["messages"][0]["content"] = 'Write the JSON object {"name": "Ada", "age": 36}.'
    resp = client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert isinstance(json.loads(resp.json()["choices"][0]["message"]["content"]), dict)


def test_text_response_format_is_plain(client):
    resp = client.post("/v1/chat/completions", json=_body(response_format={"type": "text"}, max_tokens=4))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    "fmt, needle",
    [
        ({"type": "yaml"}, "response_format.type"),
        ({"type": "json_schema"}, "json_schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}, "response_format"),
    ],
)
def test_bad_response_format_is_400(client, fmt, needle):
    resp = client.post("/v1/chat/completions", json=_body(response_format=fmt))
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert needle in err["message"], err["message"]


def test_stream_sends_chunks_then_done(client):
    plain = client.post("/v1/chat/completions", json=_body(max_tokens=12)).json()
    resp = client.post("/v1/chat/completions", json=_body(max_tokens=12, stream=True))
    assert resp.status_code == 200, resp.text
    events = _events(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 1  # incremental
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert final["route"]["name"] == "base" and final["citations"] == []
    assert "usage" not in final  # only with stream_options.include_usage


def test_stream_with_retrieval_and_usage(client):
    doc = {"id": "owl-memo", "source": "memos/owl.txt", "text": "The night porter of the Owl hotel is called Brumbleton."}
    client.post("/v1/documents", json={"collection": "stream-test", "documents": [doc]}).raise_for_status()
    body = _body(stream=True, stream_options={"include_usage": True}, retrieval=True, collection="stream-test", top_k=1)
    body["messages"][0]["content"] = "What is the night porter of the Owl hotel called?"
    events = _events(client.post("/v1/chat/completions", json=body))
    assert events[-1] == "[DONE]"
    last = events[-2]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + last["usage"]["completion_tokens"]
    assert last["citations"][0]["id"] == "owl-memo" and last["route"]["retrieval"] is True
    finish = events[-3]
    assert finish["choices"][0]["finish_reason"] and finish["citations"][0]["id"] == "owl-memo"


def test_stream_errors_before_streaming_are_plain_json(client):
    resp = client.post("/v1/chat/completions", json=_body(stream=True, model="no-such-adapter"))
    assert resp.status_code == 404
    assert "no-such-adapter" in resp.json()["error"]["message"]


def test_stream_with_schema_and_adapter(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}}
    events = _events(client.post("/v1/chat/completions", json=_body(stream=True, response_format=fmt, model="tester")))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1] if c["choices"])
    check_person(json.loads(text))
    assert events[-2]["route"]["adapter"] == "tester"
