"""Typed errors shared by every part.

Each carries an HTTP status and an OpenAI error ``type`` so the service can turn it into
``{"error": {...}}`` without guessing; the CLI prints the message alone.
"""

from __future__ import annotations


class RagtuneError(Exception):
    """Base class: a problem the user can act on, with a message that names it."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(RagtuneError):
    """The caller sent something malformed (empty messages, a bad document...)."""

    status_code = 400
    error_type = "invalid_request_error"


class PermissionDeniedError(RagtuneError):
    """The caller is known but may not do this (another tenant's data, an admin endpoint)."""

    status_code = 403
    error_type = "permission_error"


class ConflictError(RagtuneError):
    """The request is valid but the server's state refuses it (e.g. no LoRA slot left)."""

    status_code = 409
    error_type = "conflict_error"


class NotFoundError(RagtuneError):
    """A named thing (adapter, document, route) does not exist."""

    status_code = 404
    error_type = "not_found_error"


class ConfigError(RagtuneError):
    """Settings or installed packages do not allow the requested work."""

    status_code = 500
    error_type = "configuration_error"


class ModelNotAvailableError(ConfigError):
    """The base model cannot be provisioned (package missing, bad folder, checksum mismatch)."""


class BackendUnavailableError(RagtuneError):
    """A server ragtune talks to cannot be reached (a remote vLLM or ragtune service: down, starting, wrong URL)."""

    status_code = 503
    error_type = "service_unavailable"
