"""``ragtune train-adapter`` as mounted on a typer app."""

from __future__ import annotations

from typer.testing import CliRunner

from ragtune.errors import InvalidRequestError
from tests.conftest import cli_app
from tests.trainer.helpers import write_jsonl
from trainer.cli import register


def make_app():
    return cli_app(register)


def test_help_lists_the_contract_flags():
    result = CliRunner().invoke(make_app(), ["train-adapter", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for flag in ("--style", "--data", "--config", "--max-steps", "--epochs", "--resume", "--quantization",
                 "--memory-budget"):
        assert flag in result.output


def test_bad_data_from_the_cli_raises_the_typed_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_HOME", str(tmp_path / "home"))
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p"}])
    result = CliRunner().invoke(make_app(), ["train-adapter", "--style", "s", "--data", str(data), "--max-steps", "1"])
    assert isinstance(result.exception, InvalidRequestError)  # ragtune.cli prints its message, exit 2
    assert "d.jsonl:1: missing 'completion'" in result.exception.message
    assert not (tmp_path / "home" / "adapters" / "s").exists()


def test_config_errors_name_the_flag(tmp_path):
    from ragtune.errors import ConfigError

    result = CliRunner().invoke(make_app(), ["train-adapter", "--style", "s", "--data", "d.jsonl", "--epochs", "0"])
    assert isinstance(result.exception, ConfigError)
    assert "epochs: epochs must be > 0" in result.exception.message


def test_memory_budget_flag_is_checked_like_the_yaml_field():
    from ragtune.errors import ConfigError

    result = CliRunner().invoke(make_app(), ["train-adapter", "--style", "s", "--data", "d.jsonl",
                                             "--memory-budget", "0"])
    assert isinstance(result.exception, ConfigError)
    assert "memory_budget_gib" in result.exception.message
