"""Ingests killed with SIGKILL lose nothing and leave no half document; a clean exit loses nothing.

Each writer is a separate Python process on a real Chroma PersistentClient with the real
embedding model; the test kills it mid-write (while its journal entry exists: after embedding,
during the Chroma calls), then reopens the store the way the service does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest

from tests.conftest import REPO, soak_record

pytestmark = pytest.mark.slow

N_DOCS = 500


def _text(i: int, version: int, words: int) -> str:
    # Distinct words per document so a search for one finds it first.
    return " ".join(f"doc{i}v{version}w{j}" for j in range(words))


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from ragtune.settings import Settings
    from retriever.store import FactStore
    home, version, words, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = FactStore(Settings(home=home))
    docs = [{"id": f"d{i}", "text": " ".join(f"doc{i}v{version}w{j}" for j in range(words))} for i in range(n)]
    result = store.upsert(docs, collection="crash")
    print("ACK", result.documents, result.chunks, flush=True)
""")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def _write(home: Path, version: int, words: int, n: int = N_DOCS) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(version), str(words), str(n)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _journal(home: Path) -> Path:
    return home / "chroma.journal"


def _kill_mid_write(proc: subprocess.Popen, home: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not list(_journal(home).glob("*.ingest.npz")):
        assert proc.poll() is None, "the writer finished before it could be killed"
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _raw_chunk_count(home: Path) -> int:
    """Chunks in Chroma as the killed process left them (no replay: a bare client, in another process)."""
    script = ("import chromadb,sys; c=chromadb.PersistentClient(path=sys.argv[1]);"
              "print(sum(x.count() for x in c.list_collections()))")
    out = subprocess.run([sys.executable, "-c", script, str(home / "chroma")], env=_env(), capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def _docs(home: Path) -> dict[str, list]:
    """Each document's current version, as (chunk, text) pairs, after the store's replay."""
    from ragtune.settings import Settings
    from retriever.store import FactStore

    store = FactStore(Settings(home=home))  # replays an interrupted ingest, as the service would
    got = store.client.get_collection("crash").get(include=["metadatas", "documents"],
                                                   where={"valid_to_day": {"$gt": date.today().toordinal()}})
    docs: dict[str, list] = {}
    for meta, text in zip(got["metadatas"], got["documents"]):
        docs.setdefault(meta["doc_id"], []).append((meta["chunk"], text))
    return {d: sorted(chunks) for d, chunks in docs.items()}


def test_kill_during_a_500_document_ingest_leaves_every_document_whole(tmp_path):
    proc = _write(tmp_path, version=1, words=300)
    _kill_mid_write(proc, tmp_path)
    before_replay = _raw_chunk_count(tmp_path)
    docs = _docs(tmp_path)
    assert len(docs) == N_DOCS, f"{len(docs)} documents after replay ({before_replay} chunks before it)"
    for i in range(N_DOCS):
        joined = " ".join(t for _, t in docs[f"d{i}"])
        assert f"doc{i}v1w0 " in joined and f"doc{i}v1w299" in joined  # first and last word: whole
    assert not list(_journal(tmp_path).glob("*.ingest.npz"))  # replayed and cleared
    soak_record("kill -9 store mid-ingest", documents=N_DOCS, chunks_before_replay=before_replay,
                chunks_after=sum(len(c) for c in docs.values()), whole_after=N_DOCS)


def test_kill_while_replacing_documents_leaves_one_whole_current_version(tmp_path):
    first = _write(tmp_path, version=1, words=300)  # 3+ chunks per document
    assert first.wait() == 0 and "ACK" in first.stdout.read()
    proc = _write(tmp_path, version=2, words=40)  # 1 chunk each: version 1 must close, all of it
    _kill_mid_write(proc, tmp_path)
    docs = _docs(tmp_path)
    assert len(docs) == N_DOCS
    for i in range(N_DOCS):
        texts = [t for _, t in docs[f"d{i}"]]
        assert len(texts) == 1 and texts[0].startswith(f"doc{i}v2w0 "), (i, [t[:20] for t in texts])


def test_acknowledged_documents_survive_a_clean_exit_below_chromas_sync_threshold(tmp_path):
    # chroma issue #6975: upserts below hnsw sync_threshold (1000) lost from the vector index
    # after a clean exit once a later write purged the WAL. 300 chunks, then one more write.
    first = _write(tmp_path, version=1, words=40, n=300)
    assert first.wait() == 0 and "ACK 300 300" in first.stdout.read()
    later = subprocess.run([sys.executable, "-c", WRITER.replace('"crash"', '"other"'), str(tmp_path), "9", "5", "1"],
                           env=_env(), capture_output=True, text=True)
    assert later.returncode == 0, later.stderr[-2000:]

    from ragtune.settings import Settings
    from retriever.store import FactStore

    store = FactStore(Settings(home=tmp_path, keyword_weight=0.0))  # dense order only: the vector index
    found = sum(store.search(_text(i, 1, 40), k=1, collection="crash")[0].doc_id == f"d{i}" for i in range(0, 300, 10))
    assert found == 30
    assert store.count(collection="crash") == 300
