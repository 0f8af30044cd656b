"""Files a hostile but realistic user drops into the corpus: each is indexed or refused with one
line naming it, quickly, and never stops the other articles from being indexed."""

from __future__ import annotations

import json

import pytest

from rag.index.reader import Index
from rag.index.writer import build
from rag.ingest.chunking import chunk_document
from rag.ingest.corpus import load_document, load_documents
from rag.text import sentence_spans
from rag.types import RagError

from .conftest import SEEDS, assert_linear_growth, load_and_split_cpu_seconds

SEED_IDS = sorted(p.name for p in SEEDS.glob("*.txt"))
ARTICLE = "Dam opens on the river\nMarch 25, 2014\nThe new dam opened on Tuesday. Officials said it cost two billion dollars.\n"


def _utf16(text: str, encoding: str = "utf-16") -> bytes:
    return text.encode(encoding)  # Python's "utf-16" writes a byte-order mark first


def _only_line_naming(errors: list[str], name: str) -> str:
    lines = [e for e in errors if e.startswith(f"{name}:")]
    assert len(lines) == 1, errors
    assert "\n" not in lines[0] and "unexpected" not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


# ---------------------------------------------------------------- through rag.index.writer.build
def test_hostile_files_next_to_the_seeds_are_reported_and_the_seeds_indexed(corpus, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The launch code of the vault is 7731, said the keeper.\n")
    (outside / "more.txt").write_text("Private notes that are not part of the corpus at all.\n")
    # a 5,000,000-byte single line, dense with sentence ends: NLTK's splitter gave up on it
    (corpus / "long.txt").write_text("Hi. " * 1_250_000)
    (corpus / "list.txt").write_text(ARTICLE)
    (corpus / "list.txt.meta.json").write_text('["2013-08"]')
    (corpus / "digits.txt").write_text("1 2 3\n4 5 6 . 7 8 ! a b c 9 ?\n")
    (corpus / "wide.txt").write_bytes(_utf16(ARTICLE))
    (corpus / "late_nul.txt").write_bytes(ARTICLE.encode() * 200 + b"\x00" + ARTICLE.encode())
    (corpus / "broken.html").write_text("<p>The dam opened.</p><![foo[ x ]]>")
    (corpus / "link.txt").symlink_to(outside / "secret.txt")
    (corpus / "linked").symlink_to(outside, target_is_directory=True)

    report = build(tmp_path / "index", [corpus])

    assert set(SEED_IDS) | {"long.txt", "wide.txt"} == set(report.added)
    assert "binary" in _only_line_naming(report.errors, "late_nul.txt")
    assert "list.txt.meta.json" in _only_line_naming(report.errors, "list.txt")
    assert "no words to index" in _only_line_naming(report.errors, "digits.txt")
    assert "cannot parse HTML" in _only_line_naming(report.errors, "broken.html")
    assert "outside" in _only_line_naming(report.errors, "link.txt")
    assert "outside" in _only_line_naming(report.errors, "linked")
    assert len(report.errors) == 6
    index = Index.open(tmp_path / "index")
    assert "secret.txt" not in index.docs and "more.txt" not in index.docs
    assert not any("7731" in index.raw(d) for d in index.docs)


def test_a_corpus_without_any_word_is_refused_file_by_file(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "digits.txt").write_text("1 2 3\n4 5 6.\n7 8 9!\n")
    (folder / "marks.md").write_text("# a b c\n- * - ! ? . , ; x y z\n")
    (folder / "stop.txt").write_text("The and of\nTo it is, as it was.\n")
    report = build(tmp_path / "index", [folder])
    assert report.added == []
    for name in ("digits.txt", "marks.md", "stop.txt"):
        assert "no words to index" in _only_line_naming(report.errors, name)


# ---------------------------------------------------------------- through rag.ingest.corpus
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_article_loads_with_exact_quotes(tmp_path, encoding):
    f = tmp_path / "wide.txt"
    bom = {"utf-16-le": "\ufeff", "utf-16-be": "\ufeff"}.get(encoding, "")
    f.write_bytes(_utf16(bom + ARTICLE.replace("two billion", "two billion “dollars” —"), encoding))
    doc = load_document(f)
    assert doc.title == "Dam opens on the river" and doc.date == "2014-03-25"
    with open(f, encoding="utf-16") as fh:
        raw = fh.read()
    sentences = [s for c in chunk_document(doc, raw, 900, 1) for s in c.sentences]
    assert [s.text for s in sentences][0] == "The new dam opened on Tuesday."
    for s in sentences:
        assert raw[s.start : s.end] == s.text


def test_utf8_byte_order_mark_is_not_part_of_the_title(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbf" + ARTICLE.encode())
    doc = load_document(f)
    assert doc.title == "Dam opens on the river"
    with open(f) as fh:  # offsets still index open().read(), which keeps the mark
        raw = fh.read()
    assert all(raw[s:e] in ARTICLE for s, e in doc.segments)


def test_nul_byte_anywhere_means_binary(tmp_path):
    f = tmp_path / "late.txt"
    f.write_bytes(ARTICLE.encode() * 200 + b"\x00tail")  # past the first 8 KiB
    with pytest.raises(RagError, match=r"^late\.txt: binary file"):
        load_document(f)


@pytest.mark.parametrize(
    "sidecar, problem",
    [
        ('["2013-08"]', "JSON array"),
        ('"2013-08"', "JSON string"),
        ("2013", "JSON number"),
        ('{"title": 5}', '"title" as a JSON number'),
        ('{"date": ["2013-08"]}', '"date" as a JSON array'),
        (json.dumps({"title": "x" * 5000}), '"title" that is not one line'),
        (json.dumps({"author": "Jo\nDoe"}), '"author" that is not one line'),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_sidecar_refuses_its_article_with_one_line_naming_it(tmp_path, sidecar, problem):
    (tmp_path / "a.txt").write_text(ARTICLE)
    (tmp_path / "a.txt.meta.json").write_text(sidecar)
    (tmp_path / "b.txt").write_text(ARTICLE.replace("dam", "bridge"))
    result = load_documents([tmp_path])
    assert [d.id for d in result.documents] == ["b.txt"]
    line = _only_line_naming(result.errors, "a.txt")
    assert "a.txt.meta.json" in line and problem in line


def test_good_sidecar_still_gives_metadata(tmp_path):
    (tmp_path / "a.txt").write_text(ARTICLE)
    (tmp_path / "a.txt.meta.json").write_text(json.dumps({"outlet": "Gulf Times", "note": "any other key is ignored"}))
    assert load_document(tmp_path / "a.txt").outlet == "Gulf Times"


def test_links_out_of_the_corpus_folder_are_skipped(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("The launch code of the vault is 7731, said the keeper.\n")
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "sub" / "real.txt").write_text(ARTICLE)
    (corpus / "alias.txt").symlink_to(corpus / "sub" / "real.txt")  # inside: followed
    (corpus / "link.txt").symlink_to(outside / "secret.txt")
    (corpus / "linked").symlink_to(outside, target_is_directory=True)
    result = load_documents([corpus])
    assert sorted(d.id for d in result.documents) == ["alias.txt", "real.txt"]
    assert "outside" in _only_line_naming(result.errors, "link.txt")
    assert "outside" in _only_line_naming(result.errors, "linked")
    assert len(result.errors) == 2


def test_html_that_will_not_parse_is_reported_under_its_name(tmp_path):
    f = tmp_path / "broken.html"
    f.write_text("<p>The dam opened.</p><![foo[ x ]]>")
    result = load_documents([tmp_path])
    assert "cannot parse HTML" in _only_line_naming(result.errors, "broken.html")


def test_no_words_file_is_refused(tmp_path):
    f = tmp_path / "digits.txt"
    f.write_text("1 2 3\n4 5 6 . 7 8 ! a b c\n")
    with pytest.raises(RagError, match=r"^digits\.txt: no words to index"):
        load_document(f)


# ---------------------------------------------------------------- growth
N = 500_000

SHAPES = {
    "words.txt": lambda n: "word " * (n // 5),
    "AB AB.txt": lambda n: "AB " * (n // 3),
    "no spaces.txt": lambda n: "x" * n,
    "sentence ends.txt": lambda n: "Hi. " * (n // 4),
    "short lines.txt": lambda n: "A short line\n" * (n // 13),
    "date then spaces.txt": lambda n: "March 25, 2014" + " " * n + "x",
    "sign up then spaces.txt": lambda n: "Sign up for" + " " * n + "!",
    "photo credits.txt": lambda n: "(photo credit: " * (n // 15),
    "a < b.html": lambda n: "a < b " * (n // 6),
    "ab < cd.html": lambda n: "ab < cd " * (n // 8),
    "unbalanced.html": lambda n: "<" * n,
    "divs.html": lambda n: "<div>" * (n // 5),
    "divs with text.html": lambda n: "<div>ab" * (n // 7),
    "breaks.html": lambda n: "ab<br>" * (n // 6),
}


@pytest.fixture(scope="module", autouse=True)
def _splitter_loaded():
    sentence_spans("Loaded once. Not timed.")


@pytest.mark.parametrize("name", list(SHAPES))
def test_loading_and_splitting_grow_linearly_with_the_file(tmp_path, name):
    measured = []
    for n in (N // 100, N // 4, N):  # the first only warms every code path this shape takes
        f = tmp_path / f"{n}-{name}"
        f.write_text(SHAPES[name](n))
        measured.append(load_and_split_cpu_seconds(f, SHAPES[name](n), 900))
    assert_linear_growth(name, measured[1], measured[2])
