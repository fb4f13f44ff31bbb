"""Turn files on disk into Documents: .txt/.md (one document per file) and .jsonl (one per line).

Loading is all-or-nothing: any bad file or line raises before a single document is returned, so
an ingest never writes half a folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import ValidationError

from ragtune.errors import InvalidRequestError
from retriever.models import Document

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".md"})
JSONL_SUFFIXES = frozenset({".jsonl"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES


def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", param="path") from exc
    except OSError as exc:
        raise InvalidRequestError(f"{path}: cannot read ({exc.strerror or exc})", param="path") from exc
    if not text.strip():
        raise InvalidRequestError(f"{path}: file is empty", param="path")
    return text


def _load_text(path: Path, root: Path) -> Document:
    # The id is the path relative to what the user pointed at, so re-ingesting the same folder
    # (from anywhere) replaces documents instead of duplicating them.
    rel = path.relative_to(root).as_posix()
    return Document(id=rel, text=_read(path), source=rel)


def _load_jsonl(path: Path) -> list[Document]:
    docs: list[Document] = []
    for lineno, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{where}: invalid JSON ({exc.msg})", param="path") from exc
        if not isinstance(record, dict):
            raise InvalidRequestError(f"{where}: expected a JSON object, got {type(record).__name__}", param="path")
        try:
            docs.append(Document.model_validate(record))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}" for err in exc.errors()
            )
            raise InvalidRequestError(f"{where}: {problems}", param="path") from exc
    return docs


def _load_file(path: Path, root: Path) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return [_load_text(path, root)]
    return _load_jsonl(path)


def load_path(path: Path | str) -> list[Document]:
    """Documents from a file or, recursively and in sorted order, from a directory.

    Unsupported files inside a directory are skipped with a warning; an unsupported single file,
    a missing path, an empty file or a bad JSONL line is an ``InvalidRequestError``.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidRequestError(f"{path}: no such file or directory", param="path")
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise InvalidRequestError(
                f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}",
                param="path",
            )
        return _load_file(path, path.parent)

    docs: list[Document] = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.git, .DS_Store) are never documents
        if file.suffix.lower() not in SUPPORTED_SUFFIXES:
            log.warning("skipping %s: unsupported file type %r", file, file.suffix or "(none)")
            continue
        docs.extend(_load_file(file, path))
    if not docs:
        raise InvalidRequestError(
            f"{path}: no supported files found ({', '.join(sorted(SUPPORTED_SUFFIXES))})", param="path"
        )
    return docs
