"""API keys, roles and tenants over HTTP, against the real engine and a real Chroma store.

The adversarial half tries to reach another tenant's facts every way the API offers — a forged
tenant field on chat and on ingest, another tenant's document ids (get, delete), a tenant query
parameter, a retrieval filter in the body, a route that pins a tenant — and counts leaks: 0.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.service.conftest import serve

pytestmark = pytest.mark.slow

ADMIN = "admin-key-0123456789abcdef"
ACME_ADMIN = "acme-admin-key-0123456789"
ACME_QUERY = "acme-query-key-0123456789"
GLOBEX_QUERY = "globex-query-key-012345678"
ANY_QUERY = "any-tenant-query-key-0123"

# Facts only the other tenant has: if a word of them reaches an acme answer or citation, it leaked.
GLOBEX_FACT = "The globex vault code is zebra-quartz-9931."
ACME_FACT = "The acme lighthouse keeper is named Ottoline Brandt."


@pytest.fixture(scope="module")
def keys_settings(service_settings, tmp_path_factory):
    routes = tmp_path_factory.mktemp("routes") / "routes.yaml"
    routes.write_text(
        "acme-pinned:\n  retrieval: \"on\"\n  tenant: acme\n  pin_tenant: true\n  top_k: 2\n"
        "acme-default:\n  retrieval: \"on\"\n  tenant: acme\n  top_k: 2\n"
    )
    keys = [
        {"key": ADMIN, "role": "admin"},
        {"key_sha256": hashlib.sha256(ACME_ADMIN.encode()).hexdigest(), "role": "admin", "tenant": "acme"},
        {"key": ACME_QUERY, "role": "query", "tenant": "acme"},
        {"key": GLOBEX_QUERY, "role": "query", "tenant": "globex"},
        {"key": ANY_QUERY, "role": "query"},
    ]
    return service_settings.model_copy(update={"api_keys": json.dumps(keys), "routes_file": routes,
                                               "collection": "authfacts"})


@pytest.fixture(scope="module")
def auth_server(keys_settings, vllm_backend, lora_adapter_dir):
    from retriever.store import FactStore
    from router.factory import build_router
    from service.app import create_app

    router = build_router(keys_settings, backend=vllm_backend, store=FactStore(keys_settings))
    with serve(create_app(keys_settings, router=router)) as base:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        for tenant, fact in (("acme", ACME_FACT), ("globex", GLOBEX_FACT)):
            r = httpx.post(f"{base}/v1/documents", headers=admin, timeout=120,
                           json={"tenant": tenant, "documents": [{"id": f"{tenant}-doc", "text": fact}]})
            assert r.status_code == 200, r.text
        yield base


def _h(key: str | None) -> dict:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _chat(base, key, **extra):
    body = {"model": "base", "messages": [{"role": "user", "content": "What is the vault code?"}],
            "max_tokens": 4, **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=_h(key), timeout=120)


def _openai_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code, err
    return err


ENDPOINTS = [("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/documents"),
             ("GET", "/v1/documents/x"), ("DELETE", "/v1/documents/x"), ("GET", "/v1/documents/x/history"),
             ("GET", "/v1/adapters"),
             ("POST", "/v1/adapters"), ("DELETE", "/v1/adapters/x"), ("GET", "/metrics")]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_key_or_a_wrong_key_is_401_everywhere_but_the_probes(auth_server, method, path):
    for headers, code in (({}, "missing_api_key"), (_h("not-a-key-at-all-0000"), "invalid_api_key"),
                          ({"Authorization": "Basic abc"}, "invalid_api_key")):
        r = httpx.request(method, f"{auth_server}{path}", headers=headers, json={}, timeout=30)
        _openai_error(r, 401, code)
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{auth_server}/healthz").status_code == 200
    assert httpx.get(f"{auth_server}/readyz").status_code == 200


@pytest.mark.parametrize(("method", "path"), [e for e in ENDPOINTS if e[1] not in ("/v1/chat/completions", "/v1/models")])
def test_query_keys_cannot_reach_admin_endpoints(auth_server, method, path):
    r = httpx.request(method, f"{auth_server}{path}", headers=_h(ANY_QUERY), json={}, timeout=30)
    _openai_error(r, 403, "admin_required")


def test_each_role_does_what_it_may(auth_server):
    assert httpx.get(f"{auth_server}/v1/models", headers=_h(ANY_QUERY)).status_code == 200
    assert _chat(auth_server, ANY_QUERY).status_code == 200
    assert httpx.get(f"{auth_server}/v1/adapters", headers=_h(ADMIN)).status_code == 200
    assert httpx.get(f"{auth_server}/metrics", headers=_h(ADMIN)).status_code == 200
    assert _chat(auth_server, ADMIN).status_code == 200  # admin includes query
    # A key given only as its hash works the same.
    assert httpx.get(f"{auth_server}/v1/documents/acme-doc", headers=_h(ACME_ADMIN)).status_code == 200


def _cited_text(r) -> str:
    assert r.status_code == 200, r.text
    data = r.json()
    return json.dumps(data["citations"]) + data["choices"][0]["message"]["content"]


def test_a_tenant_bound_key_never_sees_another_tenants_facts(auth_server):
    leaks, attempts = 0, 0
    # Retrieval with no tenant named: the key's tenant, not the default one.
    r = _chat(auth_server, ACME_QUERY, retrieval=True, top_k=5)
    text = _cited_text(r)
    assert "Ottoline" in text
    leaks += "zebra-quartz" in text
    attempts += 1
    # A forged tenant field: refused, not silently honoured.
    for key in (ACME_QUERY, ACME_ADMIN):
        err = _openai_error(_chat(auth_server, key, retrieval=True, tenant="globex"), 403, "tenant_forbidden")
        assert err["param"] == "tenant"
        attempts += 1
    # Naming its own tenant is fine.
    leaks += "zebra-quartz" in _cited_text(_chat(auth_server, ACME_QUERY, retrieval=True, tenant="acme"))
    attempts += 1
    # Retrieval filters are not an API: an unknown field is a 400, never a where-clause.
    for field in ({"where": {"tenant": "globex"}}, {"filter": {"tenant": "globex"}}, {"metadata": {"tenant": "globex"}}):
        _openai_error(_chat(auth_server, ACME_QUERY, retrieval=True, **field), 400)
        attempts += 1
    # The other way round: globex's key sees globex only.
    text = _cited_text(_chat(auth_server, GLOBEX_QUERY, retrieval=True, top_k=5))
    assert "zebra-quartz" in text
    leaks += "Ottoline" in text
    attempts += 1
    assert leaks == 0 and attempts == 8


def test_document_ids_of_another_tenant_are_not_found_and_cannot_be_deleted(auth_server):
    acme_admin = _h(ACME_ADMIN)
    # Another tenant's id reads exactly like an id that exists nowhere.
    for path in ("/v1/documents/globex-doc", "/v1/documents/no-such-doc"):
        _openai_error(httpx.get(f"{auth_server}{path}", headers=acme_admin), 404, "document_not_found")
        _openai_error(httpx.get(f"{auth_server}{path}/history", headers=acme_admin), 404, "document_not_found")
        _openai_error(httpx.delete(f"{auth_server}{path}", headers=acme_admin), 404, "document_not_found")
    # A tenant query parameter naming another tenant is refused.
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/history")):
        r = httpx.request(method, f"{auth_server}/v1/documents/globex-doc{suffix}", params={"tenant": "globex"},
                          headers=acme_admin)
        _openai_error(r, 403, "tenant_forbidden")
    # An ingest naming another tenant is refused and writes nothing.
    r = httpx.post(f"{auth_server}/v1/documents", headers=acme_admin,
                   json={"tenant": "globex", "documents": [{"id": "globex-doc", "text": "overwritten by acme"}]})
    _openai_error(r, 403, "tenant_forbidden")
    got = httpx.get(f"{auth_server}/v1/documents/globex-doc", params={"tenant": "globex"}, headers=_h(ADMIN))
    assert got.status_code == 200 and got.json()["chunks"][0]["text"] == GLOBEX_FACT
    # An ingest without a tenant lands in the key's tenant, even with the same id.
    r = httpx.post(f"{auth_server}/v1/documents", headers=acme_admin,
                   json={"documents": [{"id": "globex-doc", "text": "acme's own globex-doc"}]})
    assert r.status_code == 200 and r.json()["tenant"] == "acme"
    mine = httpx.get(f"{auth_server}/v1/documents/globex-doc", headers=acme_admin).json()
    assert mine["tenant"] == "acme" and mine["chunks"][0]["text"] == "acme's own globex-doc"
    assert httpx.delete(f"{auth_server}/v1/documents/globex-doc", headers=acme_admin).json()["deleted"]
    # globex's document is untouched by all of it.
    got = httpx.get(f"{auth_server}/v1/documents/globex-doc", params={"tenant": "globex"}, headers=_h(ADMIN))
    assert got.status_code == 200 and got.json()["chunks"][0]["text"] == GLOBEX_FACT


def test_a_route_that_pins_a_tenant_cannot_be_overridden(auth_server):
    err = _openai_error(_chat(auth_server, ANY_QUERY, model="acme-pinned", tenant="globex"), 403, "tenant_forbidden")
    assert "acme-pinned" in err["message"]
    text = _cited_text(_chat(auth_server, ANY_QUERY, model="acme-pinned"))
    assert "Ottoline" in text and "zebra-quartz" not in text
    # A globex-bound key cannot use acme's pinned route either.
    _openai_error(_chat(auth_server, GLOBEX_QUERY, model="acme-pinned"), 403, "tenant_forbidden")
    # Without pin_tenant the route's tenant is only a default: an unbound key may override it...
    assert "zebra-quartz" in _cited_text(_chat(auth_server, ANY_QUERY, model="acme-default", tenant="globex"))
    # ...but a bound key still cannot.
    _openai_error(_chat(auth_server, ACME_QUERY, model="acme-default", tenant="globex"), 403, "tenant_forbidden")


def test_a_bad_key_list_stops_the_app_before_it_starts(service_settings):
    from ragtune.errors import ConfigError
    from service.app import create_app

    for bad, needle in (('[{"key": "short", "role": "admin"}]', "16 characters"),
                        ('[{"key": "long-enough-secret-0000", "role": "root"}]', "role"),
                        ("[]", "empty"), ("/no/such/file", "neither")):
        with pytest.raises(ConfigError, match=needle) as info:
            create_app(service_settings.model_copy(update={"api_keys": bad}))
        assert "long-enough-secret" not in str(info.value)  # secrets are never echoed
