"""`ragtune serve` will not expose an unauthenticated service beyond loopback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.cli import is_loopback, register
from tests.conftest import cli_app


def _app():
    return cli_app(register)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                 ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                                 ("10.0.0.5", False), ("example.com", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_without_keys_is_refused(monkeypatch):
    monkeypatch.delenv("RAGTUNE_API_KEYS", raising=False)
    result = CliRunner().invoke(_app(), ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "Refusing to serve on 0.0.0.0 with auth off" in result.output and "--insecure" in result.output


def test_a_malformed_key_list_is_refused_before_serving(monkeypatch):
    monkeypatch.setenv("RAGTUNE_API_KEYS", '[{"key": "too-short", "role": "admin"}]')
    result = CliRunner().invoke(_app(), ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "RAGTUNE_API_KEYS" in result.output and "16 characters" in result.output
    assert "too-short" not in result.output
