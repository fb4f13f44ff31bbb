"""A real ragtune service around the session's vLLM engine: the OpenAI-compatible endpoint the
api arms are tested against (no mocks: the official openai client talks HTTP to it)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def api_server(tmp_path_factory, base_model_dir, vllm_backend):
    from ragtune.settings import Settings
    from retriever.store import FactStore
    from router.factory import build_router
    from service.app import create_app
    from tests.service.conftest import serve

    settings = Settings(home=tmp_path_factory.mktemp("api-service"), base_model=str(base_model_dir))
    router = build_router(settings, backend=vllm_backend, store=FactStore(settings))
    with serve(create_app(settings, router=router)) as base:
        yield base


@pytest.fixture()
def price_file(tmp_path):
    """A price table with a made-up api price, so the cost is a known multiple of the tokens."""
    from eval.cost import DEFAULT_PRICES

    text = DEFAULT_PRICES.read_text() + "  test-model:\n    input_per_1m: 2.0\n    output_per_1m: 10.0\n"
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path
