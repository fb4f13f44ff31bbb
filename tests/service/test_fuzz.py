"""Schemathesis against the app's own OpenAPI schema: every endpoint, an admin and a query key.

Real uvicorn, the session's vLLM engine, a real Chroma store. Each generated case (valid and
invalid inputs alike) is sent with both keys, and every response must be no 5xx and conform to
the schema (status code declared, content type, body shape). Fixed seed (derandomized); the case
budget per endpoint is ``RAGTUNE_FUZZ_EXAMPLES`` (CI: 40; ``make soak``: 200, over 1,000 cases).
Generation is capped at 4 tokens by the app's settings so a case costs milliseconds, not seconds.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

pytest.importorskip("schemathesis")
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
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
EXAMPLES = int(os.environ.get("RAGTUNE_FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TALLY: Counter = Counter()


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
    assert not any(k.startswith("5") for k in TALLY), TALLY


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_base):
    return schemathesis.openapi.from_url(f"{fuzz_base}/openapi.json")


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_5xx_and_responses_match_the_schema(case, fuzz_base):
    for key in (ADMIN, QUERY):
        response = case.call(base_url=fuzz_base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        TALLY[str(response.status_code)] += 1
        TALLY["cases"] += 1
        case.validate_response(response, checks=CHECKS)
