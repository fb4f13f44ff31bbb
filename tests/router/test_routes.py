"""Named routes: the YAML file's validation and how a request resolves against routes.

Resolution is pure logic; the engine is replaced by a stub that only names its adapters (the
HTTP test in tests/service/test_routes_http.py runs the same routes on the real vLLM engine).
`retrieval: auto` uses a real FactStore (Chroma + MiniLM) in a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.errors import ConfigError, InvalidRequestError, NotFoundError
from ragtune.settings import Settings
from router.router import Router
from router.routes import load_routes, parse_routes
from router.schemas import ChatMessage, ChatQuery

REPO = Path(__file__).resolve().parents[2]


class StubBackend:
    """Only what routing asks of an engine: its adapter names."""

    def __init__(self, names):
        self.names = list(names)

    def adapter_names(self):
        return sorted(self.names)


def _router(tmp_path, routes_yaml: str | None, adapters=("e2e-json", "bible-asv"), store=None, **settings):
    path = None
    if routes_yaml is not None:
        path = tmp_path / "routes.yaml"
        path.write_text(routes_yaml)
    s = Settings(home=tmp_path, routes_file=path, **settings)
    return Router(s, StubBackend(adapters), prompts=None, store=store)


def _q(model="base", text="Hello?", **kw) -> ChatQuery:
    return ChatQuery(messages=[ChatMessage(role="user", content=text)], model=model, **kw)


ROUTES = """
json-route:
  adapter: e2e-json
  retrieval: auto
  collection: kb-main
  top_k: 2
  response_format: {type: json_object}
facts:
  retrieval: on
ye-olde:
  adapter: bible-asv
  retrieval: off
  system_prompt: Speak as in 1901.
"""


def test_example_routes_file_is_valid():
    routes = load_routes(REPO / "data/routes.example.yaml")
    assert set(routes) == {"restaurant-json", "facts", "ye-olde"}
    assert routes["restaurant-json"].adapter == "e2e-json" and routes["restaurant-json"].retrieval == "auto"
    assert routes["facts"].adapter is None and routes["facts"].retrieval == "on"  # YAML `on` is a boolean
    assert routes["ye-olde"].retrieval == "off"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("r1: {adapter: x, retreival: on}", ["route 'r1'", "retreival", "Extra inputs"]),
        ("r1: {retrieval: sometimes}", ["route 'r1'", "field 'retrieval'"]),
        ("r1: {top_k: 0}", ["field 'top_k'"]),
        ("r1: {response_format: {type: json_schema}}", ["field 'response_format'", "json_schema"]),
        ("- a\n- b", ["expected a mapping"]),
        ("base: {retrieval: on}", ["may not be named 'base'"]),
        ("'bad name!': {}", ["route name"]),
        ("r1: [1, 2]", ["route 'r1' must be a mapping"]),
        ("r1: {adapter: x\n", ["not valid YAML"]),
    ],
)
def test_bad_routes_file_names_file_and_field(tmp_path, text, needles):
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_routes(path)
    assert str(path) in exc.value.message
    for needle in needles:
        assert needle in exc.value.message, exc.value.message


def test_missing_routes_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_routes(tmp_path / "nope.yaml")
    assert load_routes(None) == {}
    assert parse_routes(None) == {}


def test_route_naming_unknown_adapter_fails_at_load(tmp_path):
    with pytest.raises(ConfigError) as exc:
        _router(tmp_path, "r1: {adapter: missing}")
    assert "route 'r1'" in exc.value.message and "unknown adapter 'missing'" in exc.value.message
    assert "bible-asv, e2e-json" in exc.value.message


def test_route_name_colliding_with_adapter_fails(tmp_path):
    with pytest.raises(ConfigError, match="collide with adapter names"):
        _router(tmp_path, "e2e-json: {retrieval: on}")


def test_model_names_list_base_adapters_and_routes(tmp_path):
    router = _router(tmp_path, ROUTES)
    assert router.model_names() == ["base", "bible-asv", "e2e-json", "facts", "json-route", "ye-olde"]


def test_without_routes_file_behaviour_is_unchanged(tmp_path):
    router = _router(tmp_path, None)
    assert router.routes == {}
    route = router.resolve_route(_q("base"))
    assert (route.name, route.adapter, route.retrieval) == ("base", None, False)
    route = router.resolve_route(_q("e2e-json"))
    assert (route.name, route.adapter, route.retrieval) == ("e2e-json", "e2e-json", False)
    with pytest.raises(NotFoundError, match="Unknown adapter or model 'nope'"):
        router.resolve_route(_q("nope"))
    with pytest.raises(InvalidRequestError, match="no fact store"):
        router.resolve_route(_q("base", retrieval=True))


def test_route_applies_its_defaults(tmp_path):
    router = _router(tmp_path, ROUTES)
    route, q, passages = router._plan(_q("ye-olde"))
    assert (route.name, route.adapter, route.retrieval) == ("ye-olde", "bible-asv", False)
    assert "route 'ye-olde'" in route.reason and "retrieval off (route default)" in route.reason
    assert [m.role for m in q.messages] == ["system", "user"] and q.messages[0].content == "Speak as in 1901."
    assert passages == []


def test_request_fields_override_route_defaults(tmp_path):
    router = _router(tmp_path, ROUTES)
    query = ChatQuery(
        messages=[ChatMessage(role="system", content="mine"), ChatMessage(role="user", content="Hi")],
        model="ye-olde",
        adapter="e2e-json",
        json_schema={"type": "object"},
    )
    route, q, _ = router._plan(query)
    assert route.name == "ye-olde" and route.adapter == "e2e-json"
    assert "requested explicitly" in route.reason
    assert [m.content for m in q.messages] == ["mine", "Hi"]  # the request's system message wins
    # json-route's json_object default yields to a request's own schema
    _, q, _ = router._plan(_q("json-route", json_schema={"type": "object"}, top_k=5, collection="c2", retrieval=False))
    assert q.json_schema == {"type": "object"} and not q.json_object
    assert (q.top_k, q.collection) == (5, "c2")
    _, q, _ = router._plan(_q("json-route", retrieval=False))
    assert q.json_object and (q.top_k, q.collection) == (2, "kb-main")
    _, q, _ = router._plan(_q("json-route", retrieval=False, plain_text=True))  # response_format {type: text}
    assert not q.json_object and q.json_schema is None


def test_retrieval_on_route_needs_a_store(tmp_path):
    router = _router(tmp_path, ROUTES)
    with pytest.raises(InvalidRequestError, match="no fact store"):
        router.resolve_route(_q("facts"))
    route = router.resolve_route(_q("facts", retrieval=False))
    assert route.retrieval is False and "retrieval off (requested)" in route.reason


def test_route_whose_adapter_was_unloaded_is_a_clear_error(tmp_path):
    router = _router(tmp_path, ROUTES)
    router.backend.names.remove("bible-asv")
    with pytest.raises(ConfigError, match="Route 'ye-olde' names adapter 'bible-asv', which is not loaded"):
        router.resolve_route(_q("ye-olde"))


# --- retrieval: auto against a real fact store ------------------------------------------------

DOCS = [
    {"id": "zorbl", "text": "The secret launch code of the Zorbl project is PELICAN-42, chosen in May."},
    {"id": "canteen", "text": "The canteen serves lentil soup on Mondays and grilled fish on Fridays."},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from retriever.store import FactStore

    s = FactStore(Settings(home=tmp_path_factory.mktemp("routes-store")))
    s.upsert(DOCS, collection="kb-main")
    return s


def test_auto_retrieves_when_the_best_score_reaches_the_threshold(tmp_path, store):
    router = _router(tmp_path, ROUTES, store=store, retrieval_threshold=0.35)
    route, q, passages = router._plan(_q("json-route", "What is the secret launch code of the Zorbl project?"))
    assert route.retrieval is True and passages and passages[0].doc_id == "zorbl"
    assert len(passages) == 2  # the route's top_k
    assert f"best score {passages[0].score:.3f} >= threshold 0.350" in route.reason, route.reason


def test_auto_answers_without_passages_below_the_threshold(tmp_path, store):
    router = _router(tmp_path, ROUTES, store=store, retrieval_threshold=0.35)
    route, _, passages = router._plan(_q("json-route", "Describe the rules of cricket in one sentence."))
    assert route.retrieval is False and passages == []
    assert "< threshold 0.350" in route.reason and "answered without passages" in route.reason, route.reason


def test_auto_threshold_comes_from_settings_and_request_can_ask_auto(tmp_path, store):
    question = "Describe the rules of cricket in one sentence."
    router = _router(tmp_path, None, store=store, retrieval_threshold=-1.0)
    route, _, passages = router._plan(_q("base", question, retrieval="auto", collection="kb-main"))
    assert route.retrieval is True and passages and "retrieval auto (requested)" in route.reason
    # an empty collection under auto: answered without, and said why
    route, _, passages = router._plan(_q("base", question, retrieval="auto", collection="empty-kb"))
    assert route.retrieval is False and passages == [] and "retrieval auto" in route.reason


def test_retrieval_on_route_with_store_cites(tmp_path, store):
    router = _router(tmp_path, "facts: {retrieval: on, collection: kb-main, top_k: 1}", store=store)
    route, _, passages = router._plan(_q("facts", "Which soup is served on Mondays?"))
    assert route.retrieval is True and [p.doc_id for p in passages] == ["canteen"]
    assert "retrieval on (route default)" in route.reason


# --- the reader adapter and the retrieval query -----------------------------------------------

def test_rag_on_the_base_model_uses_the_reader_and_says_so(tmp_path, store):
    router = _router(tmp_path, "facts: {retrieval: on, collection: kb-main, top_k: 1}", store=store,
                     adapters=("e2e-json", "reader"))
    route, _, passages = router._plan(_q("facts", "Which soup is served on Mondays?"))
    assert passages and route.adapter == "reader" and "reader adapter 'reader'" in route.reason, route.reason
    # the same for a plain base request with retrieval on
    route, _, _ = router._plan(_q("base", "Which soup is served on Mondays?", retrieval=True, collection="kb-main"))
    assert route.adapter == "reader" and route.name == "reader"
    # reader: false keeps the bare base model; no retrieval, an explicit adapter: no reader either
    route, _, _ = router._plan(_q("facts", "Which soup is served on Mondays?", reader=False))
    assert route.adapter is None and "reader" not in route.reason
    assert router._plan(_q("base", "Hi"))[0].adapter is None
    route, _, _ = router._plan(_q("facts", "Which soup?", adapter="e2e-json"))
    assert route.adapter == "e2e-json"


def test_reader_is_not_used_for_example_passages_or_when_absent(tmp_path, store):
    from retriever.store import FactStore

    examples = FactStore(Settings(home=tmp_path / "ex"))
    examples.upsert([{"id": "ex1", "text": "Description: a pub.\nJSON: {}", "kind": "example"}], collection="shots")
    router = _router(tmp_path, None, store=examples, adapters=("reader",))
    route, _, passages = router._plan(_q("base", "a pub", retrieval=True, collection="shots"))
    assert passages[0].kind == "example" and route.adapter is None  # examples are not facts to read
    router = _router(tmp_path, None, store=store, adapters=("e2e-json",))
    route, _, _ = router._plan(_q("base", "Which soup?", retrieval=True, collection="kb-main"))
    assert route.adapter is None
    with pytest.raises(InvalidRequestError, match="reader adapter"):
        router._plan(_q("base", "Which soup?", retrieval=True, collection="kb-main", reader=True))


def test_retrieval_query_replaces_the_message_for_search(tmp_path, store):
    router = _router(tmp_path, None, store=store)
    message = "Format your reply as compact JSON with the keys dish and day. Which soup is on the menu?"
    _, _, by_message = router._plan(_q("base", message, retrieval=True, collection="kb-main", top_k=1))
    _, q, by_query = router._plan(_q("base", message, retrieval=True, collection="kb-main", top_k=1,
                                     retrieval_query="secret launch code of the Zorbl project"))
    assert by_query[0].doc_id == "zorbl" and by_message[0].doc_id == "canteen"
    assert q.messages[-1].content == message  # the prompt still carries the whole message
    with pytest.raises(ValueError, match="retrieval_query is empty"):
        _q("base", message, retrieval_query="  ")
