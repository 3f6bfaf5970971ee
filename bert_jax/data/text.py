"""Text sources for pretraining data: documents as lists of sentences (strings).

Three sources, one shape (an iterator of documents, each a list of sentence strings):

* :func:`read_line_documents` -- the original BERT format: one sentence per line, a blank line between
  documents (``--input_format=lines``).
* :func:`read_raw_documents` -- raw text files, one document per file (``--input_format=documents``):
  paragraphs on blank lines, reStructuredText directive lines (``.. xxx``) dropped, lines of a paragraph
  joined, then a regex sentence splitter (:func:`split_sentences`).
* :func:`read_tfds_documents` -- a ``tensorflow_datasets`` text dataset (e.g. ``wikipedia/20230601.en``),
  one document per example, split like raw documents.

Bytes that are not UTF-8 are replaced (U+FFFD) and counted; documents without text are skipped and counted.
Counts go into a :class:`SourceStats`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterator, Sequence

__all__ = [
    "SourceStats", "split_sentences", "document_sentences",
    "read_line_documents", "read_raw_documents", "read_tfds_documents",
]


@dataclasses.dataclass
class SourceStats:
    """What reading the sources saw (goes into the summary JSON)."""

    files: int = 0
    bytes: int = 0
    documents: int = 0                 # documents yielded (with at least one sentence)
    sentences: int = 0
    empty_documents_skipped: int = 0   # a document (file, example, blank-line-delimited block) with no text
    lines_with_invalid_utf8: int = 0   # lines (or whole texts) where bytes had to be replaced
    directive_lines_dropped: int = 0
    first_file_with_invalid_utf8: str = ""
    current_source: str = dataclasses.field(default="", repr=False)   # set by the readers

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("current_source")
        return d

    def invalid_utf8_warning(self) -> str:
        """One line for the user when bytes had to be replaced, else ""."""
        if not self.lines_with_invalid_utf8:
            return ""
        return (f"warning: {self.lines_with_invalid_utf8:,} line(s) of the input were not valid UTF-8; their bad "
                f"bytes were replaced by U+FFFD (first in {self.first_file_with_invalid_utf8}). Re-encode the "
                "corpus as UTF-8 (e.g. iconv -f latin1 -t utf-8) if that was not intended.")


# A sentence ends at . ! or ? (optionally followed by up to two closing quotes/brackets) when whitespace and an
# upper-case letter, digit or opening quote/bracket follow. Simple and language-agnostic enough for English
# prose; abbreviations such as "e.g. Foo" split wrongly, which only shortens a few sentences.
_CLOSE = "\"')\\]\u201d\u2019"
# split() keeps the captured end punctuation as separate items, glued back to their sentences below
_SENTENCE_BREAK = re.compile(rf"([.!?][{_CLOSE}]{{0,2}})\s+(?=[\"'(\[\u201c\u2018]?[A-Z0-9])")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")
_DIRECTIVE_LINE = re.compile(r"^[ \t]*\.\. .*(?:\n|$)", re.MULTILINE)


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (whitespace-normalised text)."""
    parts = _SENTENCE_BREAK.split(paragraph.strip())
    sentences = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
    sentences.append(parts[-1])
    return [s for s in sentences if s]


def document_sentences(text: str, stats: SourceStats | None = None) -> list[str]:
    """Sentences of a raw document: paragraphs on blank lines, ``.. `` directive lines dropped, the lines of a
    paragraph joined (whitespace runs become one space), each paragraph split by :func:`split_sentences`."""
    text, dropped = _DIRECTIVE_LINE.subn("", text.replace("\r\n", "\n"))
    if stats is not None:
        stats.directive_lines_dropped += dropped
    sentences = []
    for para in _BLANK_LINES.split(text):
        para = " ".join(para.split())
        if para:
            sentences.extend(split_sentences(para))
    return sentences


def _decode(data: bytes, stats: SourceStats | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if stats is not None:
            stats.lines_with_invalid_utf8 += 1
            if not stats.first_file_with_invalid_utf8:
                stats.first_file_with_invalid_utf8 = stats.current_source or "?"
        return data.decode("utf-8", errors="replace")


def read_line_documents(files: Sequence[str], stats: SourceStats | None = None) -> Iterator[list[str]]:
    """Documents of files in the original format: one sentence per line, blank line between documents.

    As the original, a new document starts at every blank line and at every file; lines are stripped.
    Lines that are not valid UTF-8 are decoded with replacement characters and counted.
    """
    stats = stats if stats is not None else SourceStats()
    for path in files:
        stats.files += 1
        stats.current_source = path
        doc: list[str] = []
        had_lines = False
        with open(path, "rb") as f:
            for raw in f:
                stats.bytes += len(raw)
                line = _decode(raw, stats).strip()
                if line:
                    doc.append(line)
                    had_lines = True
                elif doc:
                    stats.documents += 1
                    stats.sentences += len(doc)
                    yield doc
                    doc = []
        if doc:
            stats.documents += 1
            stats.sentences += len(doc)
            yield doc
        elif not had_lines:
            stats.empty_documents_skipped += 1   # an empty (or all-blank) file


def _raw_document(data: bytes, stats: SourceStats) -> list[str]:
    """The sentences of one raw document (bytes), counted in ``stats``; [] (counted as skipped) if none."""
    stats.bytes += len(data)
    sentences = document_sentences(_decode(data, stats), stats)
    if not sentences:
        stats.empty_documents_skipped += 1
        return []
    stats.documents += 1
    stats.sentences += len(sentences)
    return sentences


def read_raw_documents(files: Sequence[str], stats: SourceStats | None = None) -> Iterator[list[str]]:
    """One document per file, split with :func:`document_sentences` (e.g. the Python docs' ``.rst.txt``)."""
    stats = stats if stats is not None else SourceStats()
    for path in files:
        stats.files += 1
        stats.current_source = path
        with open(path, "rb") as f:
            data = f.read()
        sentences = _raw_document(data, stats)
        if sentences:
            yield sentences


def read_tfds_documents(name: str, split: str = "train", text_key: str = "text", data_dir: str | None = None,
                        stats: SourceStats | None = None) -> Iterator[list[str]]:
    """One document per example of a tfds dataset; the text feature ``text_key`` is split like a raw
    document (paragraphs on blank lines, then sentences)."""
    import tensorflow_datasets as tfds

    stats = stats if stats is not None else SourceStats()
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
    except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
        raise ValueError(f"cannot load tfds dataset {name!r} split {split!r}: {e}") from e
    spec = ds.element_spec
    if not isinstance(spec, dict) or text_key not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"tfds dataset {name!r} has no feature {text_key!r} (features: {keys}); "
                         "set --tfds_text_key")
    for i, example in enumerate(tfds.as_numpy(ds)):
        stats.current_source = f"tfds {name} {split} example {i}"
        value = example[text_key]
        data = value if isinstance(value, bytes) else str(value).encode("utf-8")
        sentences = _raw_document(data, stats)
        if sentences:
            yield sentences
