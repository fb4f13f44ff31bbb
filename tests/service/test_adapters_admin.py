"""Adapters admin over HTTP: list, hot-load, unload; only carded adapters from inside the adapters
dir; bad adapters refused (without naming server paths) while others keep serving."""

from __future__ import annotations

import json
import os
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


@pytest.fixture()
def adapters_dir(service_settings):
    root = service_settings.resolved_adapters_dir
    root.mkdir(parents=True, exist_ok=True)
    made = set(root.iterdir())
    yield root
    for extra in set(root.iterdir()) - made:  # whatever a test put there
        if extra.is_symlink() or extra.is_file():
            extra.unlink()
        else:
            shutil.rmtree(extra)


def _shipped_copy(adapters_dir, name: str):
    return shutil.copytree(SHIPPED, adapters_dir / name, ignore=shutil.ignore_patterns("report.html"))


def test_list_shows_loaded_adapters_without_server_paths(client, lora_adapter_dir):
    data = client.get("/v1/adapters").json()
    assert data["object"] == "list"
    entry = {a["name"]: a for a in data["data"]}["tester"]
    # Loaded at start-up from outside the adapters dir: only its folder name is shown.
    assert entry["rank"] == 16 and entry["path"] == lora_adapter_dir.name
    assert "q_proj" in entry["target_modules"]
    assert entry["card"] is None  # a hand-made adapter has no card
    assert str(lora_adapter_dir.parent) not in json.dumps(data)


def test_hot_load_serve_unload_then_404(client, adapters_dir):
    _shipped_copy(adapters_dir, "shipped-json")
    resp = client.post("/v1/adapters", json={"name": "shipped-json"})
    assert resp.status_code == 200, resp.text
    entry = resp.json()
    assert entry["name"] == "shipped-json" and entry["rank"] == 16 and entry["path"] == "shipped-json"
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


def test_a_path_relative_to_the_adapters_dir_loads(client, adapters_dir):
    _shipped_copy(adapters_dir, "nested-dir")
    try:
        resp = client.post("/v1/adapters", json={"name": "nested", "path": "nested-dir"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["path"] == "nested-dir"
    finally:
        client.delete("/v1/adapters/nested")


@pytest.mark.parametrize("path", ["/etc", "/", "..", "../..", "/nonexistent/secret", "x/../../etc", "."])
def test_paths_outside_the_adapters_dir_are_refused_without_saying_what_is_there(client, adapters_dir, path):
    err = _error(client.post("/v1/adapters", json={"name": "escape", "path": path}), 400, "inside")
    assert err["code"] == "path_outside_adapters_dir"
    assert "exist" not in err["message"]
    assert len(path) < 3 or path not in err["message"]  # "." and ".." occur in any sentence


def test_home_is_not_expanded(client, adapters_dir):
    err = _error(client.post("/v1/adapters", json={"name": "tilde", "path": "~"}), 400, "'~' does not exist")
    assert os.path.expanduser("~") not in err["message"]


def test_a_symlink_out_of_the_adapters_dir_is_refused(client, adapters_dir, tmp_path):
    outside = shutil.copytree(SHIPPED, tmp_path / "outside", ignore=shutil.ignore_patterns("report.html"))
    os.symlink(outside, adapters_dir / "sneaky")
    err = _error(client.post("/v1/adapters", json={"name": "sneaky"}), 400, "inside")
    assert str(tmp_path) not in err["message"]
    assert "sneaky" not in {a["name"] for a in client.get("/v1/adapters").json()["data"]}


def test_an_adapter_without_a_card_is_refused(client, adapters_dir, lora_adapter_dir):
    shutil.copytree(lora_adapter_dir, adapters_dir / "no-card")
    err = _error(client.post("/v1/adapters", json={"name": "no-card"}), 400, "card.json")
    assert str(adapters_dir) not in err["message"]


def test_corrupt_adapter_is_refused_and_others_keep_serving(client, adapters_dir):
    bad = _shipped_copy(adapters_dir, "corrupt")
    weights = bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated upload
    before = client.get("/v1/adapters").json()

    err = _error(client.post("/v1/adapters", json={"name": "corrupt"}), 400, "corrupt/adapter_model.safetensors")
    assert err["type"] == "invalid_request_error" and str(adapters_dir) not in err["message"]
    assert client.get("/v1/adapters").json() == before
    assert _chat(client, "tester").status_code == 200
    _error(_chat(client, "corrupt"), 404, "corrupt")


def test_adapter_for_another_base_model_is_refused(client, adapters_dir):
    other = _shipped_copy(adapters_dir, "other-base")
    card = json.loads((other / "card.json").read_text())
    ours = card["base_model_hash"]
    card["base_model_hash"] = "0" * 64
    (other / "card.json").write_text(json.dumps(card))

    _error(client.post("/v1/adapters", json={"name": "other-base"}), 400, "0" * 64, ours)
    assert "other-base" not in {a["name"] for a in client.get("/v1/adapters").json()["data"]}


def test_rank_above_the_engines_limit_is_refused(client, adapters_dir, base_model_dir):
    big = make_random_lora_adapter(base_model_dir, adapters_dir / "big", seed=1, std=0.01, rank=32)
    shutil.copy(SHIPPED / "card.json", big / "card.json")
    _error(client.post("/v1/adapters", json={"name": "big"}), 400, "rank 32", "max_lora_rank 16")


@pytest.mark.parametrize("name", ["base", "../etc", ""])
def test_bad_names_are_refused(client, name):
    resp = client.post("/v1/adapters", json={"name": name})
    assert resp.status_code == 400, resp.text


def test_missing_folder_is_400(client, adapters_dir):
    _error(client.post("/v1/adapters", json={"name": "ghost"}), 400, "'ghost' does not exist")
