"""Reading a learner's upload as text: plain text, Markdown or PDF, checked by content.

A file is what its bytes say it is, not what its name says: ``%PDF-`` at the start is a
PDF (its text layer is read with pypdf); anything else must be UTF-8 text without NUL or
other control bytes. Each refusal is a sentence the learner can act on.
"""

from __future__ import annotations

import io

MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_ALLOWED_CONTROLS = {"\n", "\r", "\t", "\f"}


class UnreadableDocument(ValueError):
    """An upload that is not a document we can read (the message says why)."""


def read_document(name: str, data: bytes) -> str:
    """The text of an uploaded file (``name`` is only used in messages)."""
    if not data.strip():
        raise UnreadableDocument(f"{name} is empty: upload a file with some text in it.")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise UnreadableDocument(
            f"{name} is {len(data) / 1024**2:.1f} MB; a collection takes at most 5 MB."
        )
    if data.startswith(b"%PDF-"):
        return _pdf_text(name, data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableDocument(
            f"{name} is neither a PDF nor UTF-8 text (byte {exc.start} is not UTF-8): "
            "upload a .txt, .md or .pdf file."
        ) from exc
    check_text(text, name)
    return text


def check_text(text: str, name: str = "The text") -> None:
    """Refuse binary content that happens to decode (NUL bytes, many control characters)."""
    controls = sum(1 for c in text if c < " " and c not in _ALLOWED_CONTROLS)
    if "\x00" in text or controls > max(2, len(text) // 1000):
        raise UnreadableDocument(
            f"{name} looks like a binary file, not text: upload a .txt, .md or .pdf file."
        )


def _pdf_text(name: str, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise UnreadableDocument(f"{name} could not be read as a PDF ({exc}).") from exc
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text.strip():
        raise UnreadableDocument(
            f"{name} has no text layer (it is probably scanned images): run it through OCR "
            "first, or paste its text."
        )
    return text.replace("\x00", "")
