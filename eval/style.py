"""Voice scoring: a plain-vs-archaic style classifier and a content-preservation score.

The classifier is logistic regression on all-MiniLM-L6-v2 sentence embeddings (the retriever's
model, so nothing new is loaded), trained on the voice suite's *train* split: BBE verses are
label 0 (plain), their ASV counterparts label 1 (archaic). Because each verse appears on both
sides, the classifier cannot win on content: it has to pick up the register. Its held-out
accuracy on the *test* split is reported with every run, so a reader can judge the score.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from eval.suites import REPO

TRAIN_PATH = REPO / "data" / "bible_bbe2asv" / "train.jsonl"
TEST_PATH = REPO / "data" / "bible_bbe2asv" / "test.jsonl"
CACHE_VERSION = 1


class StyleClassifierInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_pairs: int = Field(description="Verse pairs used for fitting (2 texts each).")
    test_pairs: int = Field(description="Held-out test-split pairs used for the accuracy.")
    heldout_accuracy: float = Field(description="Accuracy on the held-out texts (plain vs archaic).")
    fit_seconds: float = Field(description="Embedding + fitting time when it was fitted.")
    cached: bool = Field(description="Loaded from the cache instead of fitted in this run.")
    data_sha256: str


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _embed(texts: list[str]) -> np.ndarray:
    from retriever.embeddings import embed_texts

    return np.stack(embed_texts(list(texts))) if texts else np.zeros((0, 384), dtype=np.float32)


class StyleClassifier:
    """P(archaic) of a text, plus cosine content similarity; fitted once and cached on disk."""

    def __init__(self, model, info: StyleClassifierInfo):
        self.model = model
        self.info = info

    @classmethod
    def load_or_fit(cls, cache_dir: Path, *, train_pairs: int = 1000, test_pairs: int = 200,
                    train_path: Path = TRAIN_PATH, test_path: Path = TEST_PATH) -> StyleClassifier:
        """The cached classifier for these data and sizes, or a freshly fitted one (then cached).

        Fitting embeds 2 x ``train_pairs`` texts (~20-40 s on 2 CPU cores); the cache key is the data
        hash and the sizes, so a changed split refits.
        """
        digest = hashlib.sha256()
        for p in (train_path, test_path):
            digest.update(p.read_bytes())
        digest.update(f"{train_pairs}/{test_pairs}/{CACHE_VERSION}".encode())
        key = digest.hexdigest()
        file = Path(cache_dir) / f"style-{key[:16]}.pkl"
        if file.is_file():
            with file.open("rb") as fh:
                model, info = pickle.load(fh)
            return cls(model, StyleClassifierInfo(**{**info, "cached": True}))

        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        train = _read(train_path)[:train_pairs]
        test = _read(test_path)[:test_pairs]
        x_train = _embed([r["source_text"] for r in train] + [r["target_text"] for r in train])
        y_train = np.array([0] * len(train) + [1] * len(train))
        model = LogisticRegression(max_iter=2000, C=1.0)
        model.fit(x_train, y_train)
        # Identical BBE/ASV pairs (a few verses read the same in both) carry no style: skip them.
        test = [r for r in test if r["source_text"].strip() != r["target_text"].strip()]
        x_test = _embed([r["source_text"] for r in test] + [r["target_text"] for r in test])
        y_test = np.array([0] * len(test) + [1] * len(test))
        accuracy = float((model.predict(x_test) == y_test).mean())
        info = StyleClassifierInfo(train_pairs=len(train), test_pairs=len(test), heldout_accuracy=accuracy,
                                   fit_seconds=time.perf_counter() - started, cached=False, data_sha256=key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump((model, info.model_dump()), fh)
        tmp.replace(file)
        return cls(model, info)

    def archaic_probability(self, texts: list[str]) -> list[float]:
        """P(archaic) per text; an empty output scores 0 (it carries no voice at all)."""
        out = [0.0] * len(texts)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if keep:
            probs = self.model.predict_proba(_embed([texts[i] for i in keep]))[:, 1]
            for i, p in zip(keep, probs):
                out[i] = float(p)
        return out


def content_similarity(outputs: list[str], sources: list[str]) -> list[float]:
    """Cosine similarity of each output's embedding with its source's (embeddings are normalised)."""
    if len(outputs) != len(sources):
        raise ValueError("outputs and sources must pair up")
    keep = [i for i, t in enumerate(outputs) if t.strip()]
    out = [0.0] * len(outputs)
    if keep:
        a = _embed([outputs[i] for i in keep])
        b = _embed([sources[i] for i in keep])
        for j, i in enumerate(keep):
            out[i] = float(np.clip(a[j] @ b[j], -1.0, 1.0))
    return out
