from datetime import date

import pytest
from pydantic import ValidationError

from retriever.models import Document


def test_valid_document_is_normalised():
    doc = Document(id="  faq.md ", text="hello", metadata={"lang": "en", "rank": 2}, valid_from="2024-05-01")
    assert doc.id == "faq.md"
    assert doc.valid_from == date(2024, 5, 1)
    assert doc.resolved_source == "faq.md"
    assert Document(id="a", text="t", source=" s ").resolved_source == "s"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "   ", "text": "x"}, "document id must not be empty"),
        ({"id": "a", "text": " \n "}, "document text must not be empty"),
        ({"text": "x"}, "id"),
        ({"id": "a", "text": "x", "metadata": {"tenant": "t2"}}, "'tenant' are reserved"),
        ({"id": "a", "text": "x", "metadata": {"tags": ["a", "b"]}}, "metadata.tags"),
        ({"id": "a", "text": "x", "valid_from": "yesterday"}, "valid_from"),
        ({"id": "a", "text": "x", "colour": "red"}, "colour"),
    ],
)
def test_invalid_documents_name_the_problem(fields, message):
    with pytest.raises(ValidationError, match=message):
        Document(**fields)
