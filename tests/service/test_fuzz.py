"""Schemathesis against the app's own OpenAPI schema: every endpoint, an admin and a query key.

Real uvicorn, the session's vLLM engine, a real Chroma store. Each generated case (valid and
invalid inputs alike) is sent with both keys, and every response must be no 5xx and conform to
the schema (status code declared, content type, body shape). Fixed seed (derandomized); the case
budget per endpoint and mode is ``RAGTUNE_FUZZ_EXAMPLES`` (CI: 100, over 1,000 cases; ``make soak``: 500).
Generation is capped at 4 tokens by the app's settings so a case costs milliseconds, not seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import serve  # noqa: E402

pytestmark = pytest.mark.slow

ADMIN = "fuzz-admin-key-0123456789"
QUERY = "fuzz-query-key-0123456789"
EXAMPLES = int(os.environ.get("RAGTUNE_FUZZ_EXAMPLES", "100"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TALLY: Counter = Counter()
BY_OP: dict[str, dict[str, int]] = {}
REFUSALS: dict[str, list[str]] = {}


def _answerable(case, mode) -> None:
    """Positive chat bodies keep every field the generator chose, but ask for at most 4 tokens
    (the app refuses more) and end in a non-empty user message (a rule the schema cannot state):
    otherwise nearly all of them would stop at those two checks and never reach the engine."""
    body = case.body
    if mode is not GenerationMode.POSITIVE or case.operation.path != "/v1/chat/completions" or not isinstance(body, dict):
        return
    for field in ("max_tokens", "max_completion_tokens", "min_tokens"):
        if isinstance(body.get(field), int) and not isinstance(body[field], bool) and body[field] > 4:
            body[field] = 1 + body[field] % 4
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if not (isinstance(last, dict) and last.get("role") == "user" and str(last.get("content") or "").strip()):
            messages.append({"role": "user", "content": "Name a colour."})


@pytest.fixture(scope="module")
def fuzz_base(service_settings, vllm_backend, tmp_path_factory):
    from retriever.store import FactStore
    from router.factory import build_router
    from service.app import create_app

    home = tmp_path_factory.mktemp("fuzz")
    fuzz_settings = service_settings.model_copy(update={
        "home": home, "chroma_path": home / "chroma", "adapters_dir": home / "adapters",
        "api_keys": json.dumps([{"key": ADMIN, "role": "admin"}, {"key": QUERY, "role": "query", "tenant": "fz"}]),
        "max_tokens": 4, "max_tokens_limit": 4, "request_timeout_s": 120.0,
    })
    router = build_router(fuzz_settings, backend=vllm_backend, store=FactStore(fuzz_settings))
    with serve(create_app(fuzz_settings, router=router)) as base:
        yield base
    if os.environ.get("RAGTUNE_FUZZ_REPORT"):  # make soak: the figures for RELIABILITY.md
        Path(os.environ["RAGTUNE_FUZZ_REPORT"]).write_text(json.dumps(
            {"examples_per_operation_and_mode": EXAMPLES, "status_counts": dict(TALLY), "by_operation": BY_OP,
             "sample_refusals": REFUSALS},
            indent=2, sort_keys=True))
    assert not any(k.startswith("5") for k in TALLY), TALLY


def _operations():
    """The app's operations, from its OpenAPI schema (built without starting an engine)."""
    from ragtune.settings import Settings
    from service.app import create_app

    schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
    return {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in schema.get_all_operations())}


OPERATIONS = _operations()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_5xx_and_responses_match_the_schema(fuzz_base, label, mode):
    operation = OPERATIONS[label]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        _answerable(case, mode)
        for key in (ADMIN, QUERY):
            response = case.call(base_url=fuzz_base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
            TALLY[str(response.status_code)] += 1
            TALLY["cases"] += 1
            by = BY_OP.setdefault(f"{label} {mode.value}", {})
            by[str(response.status_code)] = by.get(str(response.status_code), 0) + 1
            if response.status_code >= 400 and len(REFUSALS.setdefault(label, [])) < 5:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    REFUSALS[label].append(f"{response.status_code} {response.json()['error']['message'][:160]}")
            case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        pytest.skip(f"{label} takes no input that can be made invalid")
