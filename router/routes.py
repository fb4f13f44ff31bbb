"""Named routes: a YAML file (``settings.routes_file``) mapping a name to how a request is served.

    restaurant-json:
      adapter: e2e-json          # a loaded adapter, or null for the base model
      retrieval: auto            # on | off | auto (auto: retrieve when the best passage scores
                                 #   at least settings.retrieval_threshold)
      collection: restaurants    # optional: collection, top_k, tenant (+ pin_tenant), system_prompt,
      top_k: 3                   #   response_format ({type: json_object} or
                                 #   {type: json_schema, json_schema: {name, schema}})

The OpenAI ``model`` field names a route, an adapter, or ``base``; route names must differ
from every adapter name and from ``base``. Fields given in a request override the route's.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from ragtune.errors import ConfigError

BASE = "base"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class RouteJSONSchema(BaseModel):
    """OpenAI's ``response_format.json_schema``: a named JSON Schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class RouteResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: RouteJSONSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> RouteResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object: {name, schema}")
        return self


class RouteSpec(BaseModel):
    """One named route's defaults; every field a request also carries overrides it."""

    model_config = ConfigDict(extra="forbid")

    adapter: str | None = Field(default=None, description="Adapter to apply; null = the base model.")
    retrieval: Literal["on", "off", "auto"] = Field(
        default="off", description="on: always retrieve; off: never; auto: retrieve when the best score "
        "reaches settings.retrieval_threshold."
    )
    collection: str | None = Field(default=None, description="Chroma collection to search (default: settings).")
    tenant: str | None = Field(default=None, description="Tenant whose documents to search (default: settings).")
    pin_tenant: bool = Field(
        default=False, description="Requests cannot override `tenant`: one naming another tenant is refused (403).")
    top_k: int | None = Field(default=None, ge=1, le=50, description="Passages to retrieve.")
    as_of: date | None = Field(default=None, description="Answer from the facts valid on this day (default: today).")
    system_prompt: str | None = Field(default=None, description="System message when the request has none.")
    response_format: RouteResponseFormat | None = Field(default=None, description="Default output constraint.")
    description: str | None = Field(default=None, description="Free text, for people.")

    @field_validator("retrieval", mode="before")
    @classmethod
    def _yaml_booleans(cls, v):
        # YAML 1.1 reads bare on/off/yes/no as booleans.
        if isinstance(v, bool):
            return "on" if v else "off"
        return v

    @model_validator(mode="after")
    def _pinned_tenant_named(self) -> RouteSpec:
        if self.pin_tenant and self.tenant is None:
            raise ValueError("pin_tenant: true needs a tenant to pin")
        return self


_ROUTES = TypeAdapter(dict[str, RouteSpec])


def _loc(loc: tuple) -> str:
    if not loc:
        return "(top level)"
    route, *field = loc
    return f"route '{route}'" + (f", field '{'.'.join(str(p) for p in field)}'" if field else "")


def parse_routes(data: Any, source: str = "<routes>") -> dict[str, RouteSpec]:
    """Validate already-parsed YAML; ConfigError names the source, the route and the field."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"routes file {source}: expected a mapping of route name -> settings, got {type(data).__name__}")
    import re

    for name in data:
        if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
            raise ConfigError(
                f"routes file {source}: route name {name!r} is invalid (letters, digits, '.', '_', '-'; at most 64)"
            )
        if name == BASE:
            raise ConfigError(f"routes file {source}: a route may not be named '{BASE}' (it names the base model)")
        if not isinstance(data[name], dict) and data[name] is not None:
            raise ConfigError(f"routes file {source}: route '{name}' must be a mapping of settings")
    try:
        return _ROUTES.validate_python({k: v or {} for k, v in data.items()})
    except ValidationError as exc:
        problems = "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"routes file {source}: {problems}") from None


def load_routes(path: Path | str | None) -> dict[str, RouteSpec]:
    """Read and validate a routes file (no file configured = no routes)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"routes file {path} does not exist (settings.routes_file / RAGTUNE_ROUTES_FILE)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"routes file {path}: not valid YAML: {exc}") from None
    return parse_routes(data, str(path))


def check_routes(routes: dict[str, RouteSpec], adapter_names, source: str = "<routes>") -> None:
    """Names must not collide with adapters; every adapter a route names must be loaded."""
    adapters = set(adapter_names)
    clashes = sorted(set(routes) & adapters)
    if clashes:
        raise ConfigError(
            f"routes file {source}: route name(s) {', '.join(clashes)} collide with adapter names; "
            "the `model` field would be ambiguous: rename the route(s)"
        )
    for name, spec in routes.items():
        if spec.adapter is not None and spec.adapter not in adapters:
            known = ", ".join(sorted(adapters)) or "none loaded"
            raise ConfigError(
                f"routes file {source}: route '{name}', field 'adapter': unknown adapter '{spec.adapter}' "
                f"(loaded adapters: {known})"
            )
