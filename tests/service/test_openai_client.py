"""The official `openai` Python client against the live server (real vLLM on CPU)."""

from __future__ import annotations

import json

import pytest

from tests.router.test_structured import PERSON_SCHEMA, check_person

openai = pytest.importorskip("openai", reason="the `openai` client is in the dev extra: pip install -e '.[dev]'")

pytestmark = pytest.mark.slow


@pytest.fixture()
def oai(server):
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", timeout=300, max_retries=0) as c:
        yield c


def test_models_list(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"base", "tester"} <= ids


def test_chat_with_retrieval_through_extra_body(oai, client):
    doc = {"id": "kestrel-memo", "source": "memos/kestrel.txt",
           "text": "The Kestrel project's storage room code is MAGPIE-77."}
    client.post("/v1/documents", json={"collection": "oai-test", "documents": [doc]}).raise_for_status()
    resp = oai.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": "What is the Kestrel project's storage room code?"}],
        max_tokens=16,
        extra_body={"retrieval": True, "collection": "oai-test", "top_k": 1},
    )
    assert resp.object == "chat.completion"
    assert resp.usage.completion_tokens > 0
    extra = resp.model_extra  # ragtune's additions survive in the client's model
    assert extra["citations"][0]["id"] == "kestrel-memo"
    assert extra["route"]["retrieval"] is True
    assert "MAGPIE" in resp.choices[0].message.content.upper()


def test_streaming(oai):
    kwargs = dict(model="base", messages=[{"role": "user", "content": "Write a sentence about the sea."}], max_tokens=12)
    whole = oai.chat.completions.create(**kwargs).choices[0].message.content
    stream = oai.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].model_extra["route"]["name"] == "base"


def test_response_format_json_schema(oai):
    resp = oai.chat.completions.create(
        model="tester",
        messages=[{"role": "user", "content": "Describe a person called Ada who is 36 years old, as JSON."}],
        max_tokens=48,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}},
    )
    check_person(json.loads(resp.choices[0].message.content))


def test_errors_raise_the_clients_exceptions(oai):
    with pytest.raises(openai.NotFoundError, match="no-such-style"):
        oai.chat.completions.create(model="no-such-style", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}],
                                    response_format={"type": "yaml"})
