"""Property-based tests: arbitrary text, bytes and markup never crash the loader, chunker or
question handling; refused input gets a clear error; offsets always point into the file."""

from __future__ import annotations

import codecs
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.ingest.chunking import chunk_document
from rag.ingest.corpus import load_document
from rag.types import RagError

from .conftest import assert_linear_growth, load_and_split_cpu_seconds, read_file

CHUNK = 300
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

text_pieces = st.one_of(
    st.text(min_size=0, max_size=400),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x1F), max_size=50),  # control characters
    st.sampled_from(["Dear Reader,", "Cookie Settings", "Related coverage", "March 25, 2014 1:12 pm", "avatar by Jo Doe", "\r\n", "\u2028", "…", "“quoted”"]),
    st.builds(lambda n: "word " * n, st.integers(0, 3000)),  # a huge line with no sentence end
)


def _write_and_check(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        _check_document(p)


def _user_text(path: Path) -> str:
    """What a user reads: ``open(path).read()``, with ``encoding="utf-16"`` for a UTF-16 file."""
    if path.read_bytes().startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        with open(path, encoding="utf-16") as f:
            return f.read()
    return read_file(str(path))


def _check_document(path: Path) -> None:
    try:
        doc = load_document(path)
    except RagError as exc:
        assert str(exc).startswith(path.name) and "\n" not in str(exc)
        return
    raw = _user_text(path)
    for s, e in doc.segments:
        assert 0 <= s < e <= len(raw)
    for c in chunk_document(doc, raw, CHUNK, 1):
        assert 0 <= c.start < c.end <= len(raw)
        for sent in c.sentences:
            assert c.start <= sent.start < sent.end <= c.end
            assert len(sent.text) <= CHUNK
            if path.suffix == ".txt":
                assert " ".join(raw[sent.start : sent.end].split()) == sent.text


@PROPS
@given(st.lists(text_pieces, max_size=8))
def test_any_text_article_loads_or_is_refused_clearly(parts):
    _write_and_check("article.txt", "\n".join(parts).encode("utf-8", "surrogatepass"))


@PROPS
@given(st.lists(st.one_of(text_pieces, st.sampled_from(["<p>", "</p>", "<script>alert('x')</script>", "<br>", "&amp;", "&#8220;", "<b>", "</b>", "<title>T</title>", "<!-- c -->", "<div", ">"])), max_size=12))
def test_any_html_article_loads_or_is_refused_clearly(parts):
    _write_and_check("page.html", "".join(parts).encode("utf-8", "surrogatepass"))


@PROPS
@given(st.binary(max_size=2000), st.sampled_from(["utf-16", "latin-1", "cp1252", None]))
def test_any_bytes_or_encoding_load_or_are_refused_clearly(data, encoding):
    _write_and_check("odd.md", data if encoding is None else "Ünïcödé news — “quoted” text.".encode(encoding, errors="replace") + data)


@PROPS
@given(st.text(max_size=2500))
def test_any_question_is_cleaned_or_refused_clearly(rag, q):
    try:
        cleaned = rag.check_question(q)
    except RagError as exc:
        assert "empty" in str(exc) or "limit is 2,000" in str(exc)
        return
    assert cleaned and cleaned == cleaned.strip() and len(cleaned) <= 2000
    assert not any(ord(ch) < 32 and ch not in "\t\n" for ch in cleaned)


# Long lines built from any repeated unit after any furniture-like start: loading and splitting
# grow linearly with the line. (Many-line shapes are measured in test_hostile_files.py.)
TIMED = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
line_units = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), min_size=1, max_size=6)
line_starts = st.sampled_from(["", "March 25, 2014", "Sign up for", "More from", "(photo credit:", "AB CD ", "Dear Reader", "<p>", "<div", "by "])


@TIMED
@given(line_starts, line_units, st.sampled_from(["shape.txt", "shape.html"]))
def test_no_long_line_shape_grows_superlinearly(start, unit, name):
    measured = []
    with tempfile.TemporaryDirectory() as d:
        for chars in (2_000, 50_000, 200_000):  # the first only warms every code path this shape takes
            p = Path(d) / f"{chars}-{name}"
            p.write_bytes((start + unit * (chars // len(unit))).encode("utf-8"))
            measured.append(load_and_split_cpu_seconds(p, _user_text(p), CHUNK))
    assert_linear_growth(f"{start!r} + {unit!r} * n in {name}", measured[1], measured[2])
