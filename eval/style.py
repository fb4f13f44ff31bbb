"""Voice scoring: a per-suite style classifier and a content-preservation score.

The classifier is logistic regression on all-MiniLM-L6-v2 sentence embeddings (the retriever's
model, so nothing new is loaded), fitted on the suite's own (source, target) pairs
(``metric.style``): sources are label 0, targets label 1. Because each pair carries the same
content on both sides, the classifier cannot win on content: it has to pick up the voice. One
classifier for every voice would score a new register by how much it resembles another one, so
each suite fits its own, cached by a hash of its pairs. Its accuracy on held-out pairs is reported
with every run; a classifier near chance cannot tell the voices apart, and the suite is then not
decided on style (``StylePairs.min_accuracy``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from eval.suites import StylePairs, read_jsonl, resolve_path

CACHE_VERSION = 2


class StyleClassifierInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs_path: str = Field(description="The pairs it was fitted on.")
    train_pairs: int = Field(description="Pairs used for fitting (2 texts each).")
    test_pairs: int = Field(description="Held-out pairs used for the accuracy.")
    heldout_accuracy: float = Field(description="Accuracy on the held-out texts (source vs target voice).")
    min_accuracy: float = Field(description="Below this the suite is not decided on style.")
    fit_seconds: float = Field(description="Embedding + fitting time when it was fitted.")
    cached: bool = Field(description="Loaded from the cache instead of fitted in this run.")
    data_sha256: str

    @property
    def near_chance(self) -> bool:
        return self.heldout_accuracy < self.min_accuracy


def _embed(texts: list[str]) -> np.ndarray:
    from retriever.embeddings import embed_texts

    return np.stack(embed_texts(list(texts))) if texts else np.zeros((0, 384), dtype=np.float32)


def _pairs(rows: list[dict], spec: StylePairs, path: Path) -> list[tuple[str, str]]:
    out = []
    for n, r in enumerate(rows, start=1):
        if spec.source_field not in r or spec.target_field not in r:
            from ragtune.errors import ConfigError

            raise ConfigError(f"{path}: row {n} lacks {spec.source_field!r} or {spec.target_field!r} "
                              f"(has: {', '.join(sorted(r))})", param="metric.style")
        src, tgt = str(r[spec.source_field]).strip(), str(r[spec.target_field]).strip()
        if src and tgt and src != tgt:  # an identical pair carries no voice
            out.append((src, tgt))
    return out


def split_pairs(spec: StylePairs) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(fit, held-out) pairs: the held-out file, or the tail of the pairs file never fitted on."""
    path = resolve_path(spec.path)
    pairs = _pairs(read_jsonl(path), spec, path)
    if spec.heldout_path is not None:
        held_path = resolve_path(spec.heldout_path)
        return pairs[: spec.fit_pairs], _pairs(read_jsonl(held_path), spec, held_path)[: spec.heldout_pairs]
    n_held = max(1, round(len(pairs) * spec.heldout_fraction))
    return pairs[: len(pairs) - n_held][: spec.fit_pairs], pairs[len(pairs) - n_held:][: spec.heldout_pairs]


class StyleClassifier:
    """P(target voice) of a text, fitted once per pairs file and cached on disk."""

    def __init__(self, model, info: StyleClassifierInfo):
        self.model = model
        self.info = info

    @classmethod
    def load_or_fit(cls, cache_dir: Path, spec: StylePairs) -> StyleClassifier:
        """The cached classifier for these pairs and sizes, or a freshly fitted one (then cached).

        Fitting embeds 2 x fit pairs texts (~20-40 s for 1,000 pairs on 2 CPU cores).
        """
        fit, held = split_pairs(spec)
        if len(fit) < 10 or len(held) < 5:
            from ragtune.errors import ConfigError

            raise ConfigError(f"{spec.path}: {len(fit)} pairs to fit and {len(held)} held out; the style "
                              "classifier needs at least 10 and 5 pairs that differ", param="metric.style")
        digest = hashlib.sha256(json.dumps([fit, held, CACHE_VERSION]).encode())
        key = digest.hexdigest()
        file = Path(cache_dir) / f"style-{key[:16]}.pkl"
        if file.is_file():
            with file.open("rb") as fh:
                model, info = pickle.load(fh)
            return cls(model, StyleClassifierInfo(**{**info, "cached": True, "min_accuracy": spec.min_accuracy}))

        from sklearn.linear_model import LogisticRegression

        started = time.perf_counter()
        x_fit = _embed([s for s, _ in fit] + [t for _, t in fit])
        model = LogisticRegression(max_iter=2000, C=1.0)
        model.fit(x_fit, np.array([0] * len(fit) + [1] * len(fit)))
        x_held = _embed([s for s, _ in held] + [t for _, t in held])
        accuracy = float((model.predict(x_held) == np.array([0] * len(held) + [1] * len(held))).mean())
        info = StyleClassifierInfo(pairs_path=str(spec.path), train_pairs=len(fit), test_pairs=len(held),
                                   heldout_accuracy=accuracy, min_accuracy=spec.min_accuracy,
                                   fit_seconds=time.perf_counter() - started, cached=False, data_sha256=key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump((model, info.model_dump()), fh)
        tmp.replace(file)
        return cls(model, info)

    def target_probability(self, texts: list[str]) -> list[float]:
        """P(target voice) per text; an empty output scores 0 (it carries no voice at all)."""
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
