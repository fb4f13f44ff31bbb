import json
import logging
from datetime import date

import pytest

from ragtune.errors import InvalidRequestError
from retriever.loaders import load_path


def test_directory_of_txt_md_jsonl(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("Beta text.", encoding="utf-8")
    (tmp_path / "sub" / "a.md").write_text("# Alpha\n\nAlpha text.", encoding="utf-8")
    lines = [
        {"id": "j1", "text": "First fact.", "source": "kb://1", "metadata": {"lang": "en"}, "valid_from": "2024-02-01"},
        {"id": "j2", "text": "Second fact."},
    ]
    (tmp_path / "facts.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")

    docs = load_path(tmp_path)

    # Sorted by path: b.txt, facts.jsonl (its lines in order), sub/a.md.
    assert [d.id for d in docs] == ["b.txt", "j1", "j2", "sub/a.md"]
    by_id = {d.id: d for d in docs}
    assert by_id["sub/a.md"].source == "sub/a.md"
    assert by_id["sub/a.md"].text.startswith("# Alpha")
    assert by_id["j1"].source == "kb://1"
    assert by_id["j1"].metadata == {"lang": "en"}
    assert by_id["j1"].valid_from == date(2024, 2, 1)
    assert by_id["j2"].source is None


def test_single_file_id_is_its_name(tmp_path):
    f = tmp_path / "notes.md"
    f.write_text("Some notes.", encoding="utf-8")
    [doc] = load_path(f)
    assert (doc.id, doc.source) == ("notes.md", "notes.md")


def test_unsupported_files_in_directory_are_skipped_with_warning(tmp_path, caplog):
    (tmp_path / "a.txt").write_text("Alpha.", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with caplog.at_level(logging.WARNING, logger="retriever.loaders"):
        docs = load_path(tmp_path)
    assert [d.id for d in docs] == ["a.txt"]
    assert "image.png" in caplog.text


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    f = tmp_path / "facts.jsonl"
    f.write_text('{"id": "a", "text": "ok"}\n\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=r"facts\.jsonl, line 3: invalid JSON"):
        load_path(f)


def test_invalid_jsonl_record_names_line_and_field(tmp_path):
    f = tmp_path / "facts.jsonl"
    f.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": "  "}\n', encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=r"facts\.jsonl, line 2: text: .*must not be empty"):
        load_path(f)
    f.write_text('["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="line 1: expected a JSON object"):
        load_path(f)


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl"])
def test_empty_file_is_an_error(tmp_path, name):
    (tmp_path / name).write_text("  \n", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match=rf"{name}: file is empty"):
        load_path(tmp_path)


def test_missing_path_and_single_unsupported_file(tmp_path):
    with pytest.raises(InvalidRequestError, match="no such file or directory"):
        load_path(tmp_path / "nope")
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(b"%PDF")
    with pytest.raises(InvalidRequestError, match=r"doc\.pdf: unsupported file type '\.pdf'"):
        load_path(pdf)
    with pytest.raises(InvalidRequestError, match="no supported files"):
        load_path(tmp_path)
