"""API keys: who may call what, and for which tenant.

``RAGTUNE_API_KEYS`` is a JSON list (or the path of a file holding one) of
``{"key": "...", "role": "admin"|"query", "tenant"?: "..."}``; ``key_sha256`` (hex) may replace
``key`` so the secret itself never sits in the environment. Only SHA-256 digests are kept in
memory, and a presented key is compared against every digest in constant time.

Roles: ``query`` may chat and list models; ``admin`` may also manage documents, adapters and read
``/metrics``. A key bound to a tenant confines every retrieval and document call to that tenant:
a request naming another tenant is refused (403), one naming none gets the key's.
With no keys configured auth is off: every caller is an unbound admin (``ragtune serve`` allows
that only on a loopback address).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ragtune.errors import ConfigError, PermissionDeniedError, RagtuneError

log = logging.getLogger(__name__)

Role = Literal["admin", "query"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class AuthenticationError(RagtuneError):
    status_code = 401
    error_type = "invalid_request_error"


class KeySpec(BaseModel):
    """One entry of RAGTUNE_API_KEYS."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, min_length=16, description="The secret itself (16+ characters).")
    key_sha256: str | None = Field(default=None, description="Hex SHA-256 of the secret, instead of `key`.")
    role: Role
    tenant: str | None = Field(default=None, description="Confine this key to one tenant.")

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of 'key' and 'key_sha256'")
        if self.key_sha256 is not None and not _SHA256.match(self.key_sha256.lower()):
            raise ValueError("'key_sha256' must be 64 hex characters")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return _digest(self.key)
        return bytes.fromhex(self.key_sha256)


@dataclass(frozen=True)
class Caller:
    """Who is calling: their role and the tenant their key is bound to (None = any)."""

    role: Role
    tenant: str | None = None
    authenticated: bool = False

    def tenant_for(self, requested: str | None, *, param: str = "tenant") -> str | None:
        """The tenant this call may use: the key's, whatever the request says; 403 if it says another."""
        if self.tenant is None:
            return requested
        if requested is not None and requested != self.tenant:
            raise PermissionDeniedError(f"This API key may only use tenant '{self.tenant}'.", param=param,
                                        code="tenant_forbidden")
        return self.tenant


OPEN = Caller(role="admin")  # auth off


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyRing:
    """The configured keys, as digests; ``identify`` maps a bearer token to its Caller."""

    def __init__(self, specs: list[KeySpec]):
        self._entries = [(s.digest(), Caller(role=s.role, tenant=s.tenant, authenticated=True)) for s in specs]
        if len({d for d, _ in self._entries}) != len(self._entries):
            raise ConfigError("RAGTUNE_API_KEYS lists the same key twice.")

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def describe(self) -> str:
        """One log line about the auth mode (no secrets)."""
        if not self.enabled:
            return "auth off: RAGTUNE_API_KEYS is unset, every caller is an admin"
        roles = [c.role for _, c in self._entries]
        return f"auth on: {roles.count('admin')} admin and {roles.count('query')} query key(s)"

    def identify(self, authorization: str | None) -> Caller:
        if not self.enabled:
            return OPEN
        if not authorization:
            raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Malformed Authorization header: expected 'Bearer <key>'.",
                                      code="invalid_api_key")
        presented = _digest(token.strip())
        found = None
        for digest, caller in self._entries:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(digest, presented):
                found = caller
        if found is None:
            raise AuthenticationError("Incorrect API key provided.", code="invalid_api_key")
        return found


_SPECS = TypeAdapter(list[KeySpec])


def load_keys(raw: str | None) -> KeyRing:
    """Parse RAGTUNE_API_KEYS: a JSON list, or the path of a file that holds one."""
    if raw is None or not raw.strip():
        return KeyRing([])
    text, origin = raw, "RAGTUNE_API_KEYS"
    if not raw.lstrip().startswith("["):
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ConfigError("RAGTUNE_API_KEYS is neither a JSON list nor the path of a readable file.")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    try:
        specs = _SPECS.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "the list"
        # Never echo the input: it holds secrets.
        raise ConfigError(f"{origin}: entry {where}: {first.get('msg', 'invalid')}.") from None
    if not specs:
        raise ConfigError(f"{origin} is an empty list: give at least one key, or unset it to turn auth off.")
    return KeyRing(specs)


def keyring_of(request: Request) -> KeyRing:
    return request.app.state.ragtune.keys


def _caller(request: Request) -> Caller:
    return keyring_of(request).identify(request.headers.get("authorization"))


def _query_caller(request: Request) -> Caller:
    return _caller(request)  # both roles may query


def _admin_caller(request: Request) -> Caller:
    caller = _caller(request)
    if caller.role != "admin":
        raise PermissionDeniedError("This endpoint needs an admin API key.", code="admin_required")
    return caller


QueryCaller = Annotated[Caller, Depends(_query_caller)]
AdminCaller = Annotated[Caller, Depends(_admin_caller)]
