"""Turn files on disk into Documents: .txt/.md/.html/.pdf (one document per file) and .jsonl (one per line).

``load_path`` is all-or-nothing: any bad file or line raises before a single document is
returned. ``load_report`` is for large folders: it returns the good files' documents and a list
of the files that failed, each with its reason, so one bad file does not stop the others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from pydantic import ValidationError

from ragtune.errors import InvalidRequestError
from retriever.models import Document

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".txt", ".md"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
JSONL_SUFFIXES = frozenset({".jsonl"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | JSONL_SUFFIXES


@dataclass
class LoadReport:
    """A folder's documents, and the files that could not be read (path, reason)."""

    documents: list[Document] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _HTMLText(HTMLParser):
    """The visible text of an HTML page: no scripts, styles or tags; blocks on their own lines."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article"})
    HIDDEN = frozenset({"script", "style", "noscript", "template", "head"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


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


def _html_text(path: Path) -> str:
    parser = _HTMLText()
    parser.feed(_read(path))
    text = parser.text()
    if not text.strip():
        raise InvalidRequestError(f"{path}: no visible text in the page", param="path")
    return text


def _pdf_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        pages = [page.extract_text() or "" for page in PdfReader(str(path)).pages]
    except (PdfReadError, OSError, ValueError) as exc:
        raise InvalidRequestError(f"{path}: not a readable PDF ({exc})", param="path") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise InvalidRequestError(f"{path}: the PDF has no text layer (scanned pages need OCR first)", param="path")
    return text


def _load_text(path: Path, root: Path) -> Document:
    # The id is the path relative to what the user pointed at, so re-ingesting the same folder
    # (from anywhere) versions documents instead of duplicating them.
    rel = path.relative_to(root).as_posix()
    suffix = path.suffix.lower()
    text = _html_text(path) if suffix in HTML_SUFFIXES else _pdf_text(path) if suffix in PDF_SUFFIXES else _read(path)
    return Document(id=rel, text=text, source=rel)


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
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _load_jsonl(path)
    return [_load_text(path, root)]


def _files(path: Path) -> tuple[list[Path], list[str]]:
    """Supported files under ``path`` in sorted order (hidden ones never), and the skipped ones."""
    files, skipped = [], []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden files and folders (.git, .DS_Store) are never documents
        if file.suffix.lower() not in SUPPORTED_SUFFIXES:
            log.warning("skipping %s: unsupported file type %r", file, file.suffix or "(none)")
            skipped.append(str(rel))
            continue
        files.append(file)
    return files, skipped


def load_report(path: Path | str) -> LoadReport:
    """Every readable file's documents under ``path`` (a file or a folder), and each failure's reason."""
    path = Path(path)
    if path.is_file():
        return LoadReport(documents=load_path(path))
    if not path.exists():
        raise InvalidRequestError(f"{path}: no such file or directory", param="path")
    report = LoadReport()
    files, report.skipped = _files(path)
    seen: dict[str, str] = {}
    for file in files:
        try:
            docs = _load_file(file, path)
        except InvalidRequestError as exc:
            report.failures.append((str(file.relative_to(path)), exc.message))
            continue
        clash = next((d.id for d in docs if d.id in seen), None)
        if clash is not None:
            report.failures.append((str(file.relative_to(path)), f"document id {clash!r} also comes from {seen[clash]}"))
            continue
        seen.update({d.id: str(file.relative_to(path)) for d in docs})
        report.documents.extend(docs)
    return report


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
    for file in _files(path)[0]:
        docs.extend(_load_file(file, path))
    if not docs:
        raise InvalidRequestError(
            f"{path}: no supported files found ({', '.join(sorted(SUPPORTED_SUFFIXES))})", param="path"
        )
    return docs
