"""Structured output (JSON / JSON Schema) and streaming on the real engines (vLLM CPU, transformers)."""

from __future__ import annotations

import asyncio
import json

import pytest

from ragtune.errors import InvalidRequestError, NotFoundError
from router.backends.base import Generation, GenerationRequest
from tests.conftest import PARITY_PROMPT

pytestmark = pytest.mark.slow

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
PROMPT = "Question: Describe a person called Ada who is 36 years old, as JSON.\nAnswer:"


def check_person(value) -> None:
    """Validate against PERSON_SCHEMA by hand (jsonschema is not a dependency)."""
    assert isinstance(value, dict), value
    assert set(value) == {"name", "age"}, value
    assert isinstance(value["name"], str) and len(value["name"]) <= 20
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool) and 0 <= value["age"] <= 150


def test_vllm_json_schema_output_validates(vllm_backend):
    out = vllm_backend.generate([GenerationRequest(prompt=PROMPT, max_tokens=48, json_schema=PERSON_SCHEMA)])[0]
    check_person(json.loads(out.text))
    assert out.finish_reason == "stop"


def test_vllm_json_object_output_is_an_object(vllm_backend):
    prompt = 'Question: Write the JSON object {"name": "Ada", "age": 36}.\nAnswer:'
    out = vllm_backend.generate([GenerationRequest(prompt=prompt, max_tokens=200, json_object=True)])[0]
    assert out.finish_reason == "stop", out.text
    assert isinstance(json.loads(out.text), dict), out.text


def test_vllm_mixed_batch_constrains_only_its_request(vllm_backend):
    plain, constrained = vllm_backend.generate(
        [
            GenerationRequest(prompt=PARITY_PROMPT, max_tokens=8),
            GenerationRequest(prompt=PROMPT, max_tokens=48, json_schema=PERSON_SCHEMA),
        ]
    )
    alone = vllm_backend.generate([GenerationRequest(prompt=PARITY_PROMPT, max_tokens=8)])[0]
    assert plain.token_ids == alone.token_ids
    check_person(json.loads(constrained.text))


def test_vllm_refuses_an_invalid_schema_with_400(vllm_backend):
    with pytest.raises(InvalidRequestError, match="response_format"):
        vllm_backend.generate([GenerationRequest(prompt=PROMPT, max_tokens=8, json_schema={"type": "no-such-type"})])
    # The engine still serves.
    assert vllm_backend.generate([GenerationRequest(prompt=PARITY_PROMPT, max_tokens=4)])[0].completion_tokens > 0


def test_transformers_refuses_structured_output(hf_backend):
    for req in (
        GenerationRequest(prompt=PROMPT, max_tokens=8, json_schema=PERSON_SCHEMA),
        GenerationRequest(prompt=PROMPT, max_tokens=8, json_object=True),
    ):
        with pytest.raises(InvalidRequestError, match="vLLM backend") as err:
            hf_backend.generate([req])
        assert err.value.status_code == 400


# --- streaming -------------------------------------------------------------------------------


def _collect(req, backend) -> tuple[list[str], Generation]:
    async def run():
        return [item async for item in backend.astream(req)]

    items = asyncio.run(run())
    assert isinstance(items[-1], Generation)
    assert all(isinstance(i, str) for i in items[:-1])
    return items[:-1], items[-1]


def test_vllm_stream_is_incremental_and_matches_generate(vllm_backend):
    req = GenerationRequest(prompt=PARITY_PROMPT, max_tokens=12)
    pieces, final = _collect(req, vllm_backend)
    whole = vllm_backend.generate([req])[0]
    assert "".join(pieces) == final.text == whole.text
    assert final.token_ids == whole.token_ids
    assert len([p for p in pieces if p]) > 1  # token by token, not one piece at the end


def test_vllm_stream_with_schema(vllm_backend):
    pieces, final = _collect(GenerationRequest(prompt=PROMPT, max_tokens=48, json_schema=PERSON_SCHEMA), vllm_backend)
    check_person(json.loads("".join(pieces)))


def test_vllm_stream_errors_before_the_first_piece(vllm_backend):
    async def first(req):
        return await anext(vllm_backend.astream(req))

    with pytest.raises(NotFoundError):
        asyncio.run(first(GenerationRequest(prompt=PARITY_PROMPT, adapter="nope")))
    with pytest.raises(InvalidRequestError, match="response_format"):
        asyncio.run(first(GenerationRequest(prompt=PROMPT, json_schema={"type": "no-such-type"})))


def test_vllm_stream_closed_early_aborts_and_engine_keeps_serving(vllm_backend):
    async def one_piece_then_close():
        stream = vllm_backend.astream(GenerationRequest(prompt=PARITY_PROMPT, max_tokens=200))
        await anext(stream)
        await stream.aclose()

    asyncio.run(one_piece_then_close())
    out = vllm_backend.generate([GenerationRequest(prompt=PARITY_PROMPT, max_tokens=4)])[0]
    assert out.completion_tokens == 4
