"""Adapters admin over HTTP: list, hot-load, unload; bad adapters refused while others keep serving."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import REPO, make_random_lora_adapter

pytestmark = pytest.mark.slow

SHIPPED = REPO / "adapters" / "e2e-json"


def _chat(client, model: str):
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4}
    return client.post("/v1/chat/completions", json=body)


def _error(resp, status: int, *needles: str) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    for needle in needles:
        assert needle in err["message"], err["message"]
    return err


def test_list_shows_loaded_adapters(client, lora_adapter_dir):
    data = client.get("/v1/adapters").json()
    assert data["object"] == "list"
    entry = {a["name"]: a for a in data["data"]}["tester"]
    assert entry["rank"] == 16 and entry["path"] == str(lora_adapter_dir.resolve())
    assert "q_proj" in entry["target_modules"]
    assert entry["card"] is None  # a hand-made adapter has no card


def test_hot_load_serve_unload_then_404(client):
    resp = client.post("/v1/adapters", json={"name": "shipped-json", "path": str(SHIPPED)})
    assert resp.status_code == 200, resp.text
    entry = resp.json()
    assert entry["name"] == "shipped-json" and entry["rank"] == 16
    assert entry["card"]["base_model_hash"] and entry["card"]["method"] == "qlora-nf4"
    assert "shipped-json" in {m["id"] for m in client.get("/v1/models").json()["data"]}

    served = _chat(client, "shipped-json")
    assert served.status_code == 200, served.text
    assert served.json()["route"]["adapter"] == "shipped-json"

    resp = client.delete("/v1/adapters/shipped-json")
    assert resp.status_code == 200 and resp.json() == {"object": "adapter.deleted", "name": "shipped-json", "deleted": True}
    _error(_chat(client, "shipped-json"), 404, "shipped-json")
    _error(client.delete("/v1/adapters/shipped-json"), 404, "shipped-json")
    assert "shipped-json" not in {a["name"] for a in client.get("/v1/adapters").json()["data"]}


def test_path_defaults_to_the_adapters_dir(client, service_settings, lora_adapter_dir):
    target = service_settings.resolved_adapters_dir / "from-dir"
    shutil.copytree(lora_adapter_dir, target)
    try:
        resp = client.post("/v1/adapters", json={"name": "from-dir"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["path"] == str(target.resolve())
    finally:
        client.delete("/v1/adapters/from-dir")
        shutil.rmtree(target)


def test_corrupt_adapter_is_refused_and_others_keep_serving(client, tmp_path, lora_adapter_dir):
    bad = tmp_path / "corrupt"
    shutil.copytree(lora_adapter_dir, bad)
    weights = bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated upload
    before = client.get("/v1/adapters").json()

    err = _error(client.post("/v1/adapters", json={"name": "corrupt", "path": str(bad)}), 400, "adapter_model.safetensors")
    assert err["type"] == "invalid_request_error"
    assert client.get("/v1/adapters").json() == before
    assert _chat(client, "tester").status_code == 200
    _error(_chat(client, "corrupt"), 404, "corrupt")


def test_adapter_for_another_base_model_is_refused(client, tmp_path):
    other = tmp_path / "other-base"
    shutil.copytree(SHIPPED, other, ignore=shutil.ignore_patterns("report.html"))
    card = json.loads((other / "card.json").read_text())
    ours = card["base_model_hash"]
    card["base_model_hash"] = "0" * 64
    (other / "card.json").write_text(json.dumps(card))

    _error(client.post("/v1/adapters", json={"name": "other-base", "path": str(other)}), 400, "0" * 64, ours)
    assert "other-base" not in {a["name"] for a in client.get("/v1/adapters").json()["data"]}


def test_rank_above_the_engines_limit_is_refused(client, tmp_path, base_model_dir):
    big = make_random_lora_adapter(base_model_dir, tmp_path / "big", seed=1, std=0.01, rank=32)
    _error(client.post("/v1/adapters", json={"name": "big", "path": str(big)}), 400, "rank 32", "max_lora_rank 16")


@pytest.mark.parametrize("name", ["base", "../etc", ""])
def test_bad_names_are_refused(client, name, lora_adapter_dir):
    resp = client.post("/v1/adapters", json={"name": name, "path": str(lora_adapter_dir)})
    assert resp.status_code == 400, resp.text


def test_missing_folder_is_400(client, tmp_path):
    _error(client.post("/v1/adapters", json={"name": "ghost", "path": str(tmp_path / "nope")}), 400, "does not exist")
