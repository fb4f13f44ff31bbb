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
    sheet = tmp_path / "doc.xlsx"
    sheet.write_bytes(b"PK")
    with pytest.raises(InvalidRequestError, match=r"doc\.xlsx: unsupported file type '\.xlsx'"):
        load_path(sheet)
    with pytest.raises(InvalidRequestError, match="no supported files"):
        load_path(tmp_path)
    broken = tmp_path / "doc.pdf"
    broken.write_bytes(b"%PDF")
    with pytest.raises(InvalidRequestError, match=r"doc\.pdf: not a readable PDF"):
        load_path(broken)


def test_html_and_pdf_files_become_their_visible_text(tmp_path):
    (tmp_path / "page.html").write_text(
        "<html><head><title>t</title><style>p{}</style></head><body><h1>Ferries</h1>"
        "<p>The ferry leaves from <b>pier 7</b>.</p><script>var x = 'hidden';</script></body></html>")
    _write_pdf(tmp_path / "memo.pdf", "The memo says the vault opens at nine.")
    docs = {d.id: d for d in load_path(tmp_path)}
    assert docs["page.html"].text == "Ferries\nThe ferry leaves from pier 7."
    assert "vault opens at nine" in docs["memo.pdf"].text


def test_a_folder_report_keeps_the_good_files_and_names_each_bad_one(tmp_path):
    from retriever.loaders import load_report

    (tmp_path / "good.md").write_text("A good fact.")
    (tmp_path / "empty.txt").write_text("  ")
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "text": "ok"}\n{not json}\n')
    (tmp_path / "notes.xyz").write_text("skipped")
    report = load_report(tmp_path)
    assert [d.id for d in report.documents] == ["good.md"]
    reasons = dict(report.failures)
    assert set(reasons) == {"empty.txt", "broken.pdf", "bad.jsonl"}
    assert "empty" in reasons["empty.txt"] and "PDF" in reasons["broken.pdf"] and "line 2" in reasons["bad.jsonl"]
    assert report.skipped == ["notes.xyz"]


def _write_pdf(path, text: str) -> None:
    """A one-page PDF with a real text layer, written by hand (no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 5 0 R >> >> "
               b"/Contents 4 0 R >>",
               b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
