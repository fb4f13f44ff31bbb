"""Retriever fixtures: a private Chroma store per test, the real packaged embedding model."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.settings import Settings


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on localhost (the deployment's RAGTUNE_CHROMA_URL mode)."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tmp_path_factory.mktemp("chroma-server")
    log = open(data / "server.log", "wb")  # noqa: SIM115 - closed after the process
    proc = subprocess.Popen([str(Path(sys.executable).parent / "chroma"), "run", "--path", str(data / "db"),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (data / "server.log").read_text()[-2000:]
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


# Every store test runs twice: on an embedded PersistentClient and against the `chroma run` server.
@pytest.fixture(params=["embedded", "server"])
def store_settings(request, tmp_path) -> Settings:
    # Small chunks so a few sentences already make several chunks (replacement/shrink cases).
    settings = Settings(home=tmp_path, chunk_words=12, chunk_overlap=3, top_k=3)
    if request.param == "server":
        import chromadb

        url = request.getfixturevalue("chroma_server")
        client = chromadb.HttpClient(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
        for coll in client.list_collections():  # one server for the session: every test starts empty
            client.delete_collection(coll.name)
        settings = settings.model_copy(update={"chroma_url": url})
    return settings


@pytest.fixture()
def store(store_settings):
    from retriever.store import FactStore

    return FactStore(store_settings)


def _dump(store, name: str = "default") -> dict:
    """Every record of a collection (id -> text, metadata, vector) for before/after comparisons."""
    coll = store._get_collection(name)
    if coll is None:
        return {}
    got = coll.get(include=["documents", "metadatas", "embeddings"])
    return {
        i: (doc, dict(meta), np.round(np.asarray(emb, dtype=np.float32), 6).tobytes())
        for i, doc, meta, emb in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])
    }


@pytest.fixture()
def dump():
    return _dump
