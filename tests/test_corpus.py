"""Loading and cleaning articles: boilerplate out, metadata in, offsets exact."""

from __future__ import annotations

import pytest

from rag.ingest.chunking import chunk_document
from rag.ingest.corpus import load_document, load_documents
from rag.types import RagError

from .conftest import SEEDS, read_file

BOILERPLATE = [
    "Dear Reader",
    "Editor-in-Chief",
    "Cookie Settings",
    "Related coverage",
    "Related Content",
    "Jordanians Protest",  # a teaser about another story
    "Greenblatt",
    "Share this Story",
    "Let your voice be heard",
    "Join the Algemeiner",
    "reCAPTCHA",
    "photo credit",
    "Photo: Trango",
    "Kislev",  # the day the page was viewed, not the article's date
    "minute read",
]


def test_seed_boilerplate_is_removed_and_article_text_kept():
    docs = {d.id: d for d in load_documents([SEEDS]).documents}
    assert len(docs) == 4
    for d in docs.values():
        for junk in BOILERPLATE:
            assert junk not in d.text, f"{junk!r} left in {d.id}"
    assert "Damascus in early 2012" in docs["000_7d385fec3d1c01e6.txt"].text
    assert "Ali Larijani" in docs["002_0cd934058d5d1ad9.txt"].text
    assert "since 1997" in docs["003_40096b35d0a24c1b.txt"].text


def test_metadata_extracted_from_the_page():
    docs = {d.id: d for d in load_documents([SEEDS]).documents}
    alg = docs["002_0cd934058d5d1ad9.txt"]
    assert alg.date == "2014-03-25"  # not 2021, the date of a teaser, nor the viewing date
    assert alg.author == "Joshua Levitt"
    assert alg.outlet == "The Algemeiner"
    assert alg.title.startswith("Hamas, Iran Reportedly Renew Alliance")
    jp = docs["003_40096b35d0a24c1b.txt"]
    assert jp.date == "2017-05-30" and jp.outlet == "The Jerusalem Post"
    assert jp.title == "Report: After Iranian elections, Tehran-Hamas ties warming up"
    assert docs["000_7d385fec3d1c01e6.txt"].date.startswith("2013")  # from its .meta.json sidecar


def test_same_report_twice_is_marked_duplicate():
    docs = {d.id: d for d in load_documents([SEEDS]).documents}
    dups = {d.id: d.duplicate_of for d in docs.values() if d.duplicate_of}
    # 001 and 003 are the same report; the copy with a date and outlet is kept as canonical
    assert dups == {"001_fcf509d334208b0a.txt": "003_40096b35d0a24c1b.txt"}


def test_every_sentence_maps_back_to_the_raw_file():
    for d in load_documents([SEEDS]).documents:
        raw = read_file(d.path)
        for s, e in d.segments:
            assert raw[s:e].strip() == raw[s:e] and raw[s:e]
        for c in chunk_document(d, raw, 600, 1):
            for sent in c.sentences:
                assert " ".join(raw[sent.start : sent.end].split()) == sent.text


def test_html_article_offsets_and_metadata(tmp_path):
    page = (
        "<html><head><title>Page</title><meta property='og:site_name' content='Gulf Times'>"
        "<meta property='article:published_time' content='2019-04-02T10:00:00Z'>"
        "<script>var ignore = 'Ignore me';</script></head><body><nav>Home | World</nav>"
        "<h1>Dam opens on the river</h1><p>The new dam opened on Tuesday &amp; began producing power.</p>"
        "<p>Officials said it cost <b>two billion</b> dollars.</p><footer>Cookie Settings</footer></body></html>"
    )
    f = tmp_path / "dam.html"
    f.write_text(page)
    d = load_document(f)
    assert d.outlet == "Gulf Times" and d.date == "2019-04-02"
    assert "Ignore me" not in d.text and "Home | World" not in d.text and "Cookie" not in d.text
    assert "The new dam opened on Tuesday & began producing power." in d.text
    raw = read_file(str(f))
    for s, e in d.segments:
        assert "<" not in raw[s:e] or "</b>" in raw[s:e]


_BODY = "<p>The new dam opened on Tuesday and began producing power for the whole valley.</p>"


@pytest.mark.parametrize(
    "head, title",
    [
        ("<title>Tom &amp; Jerry meet</title>", "Tom & Jerry meet"),
        ("<title>Jerry&#8217;s &quot;big&quot; day</title>", 'Jerry’s "big" day'),
        ("<meta property='og:title' content='Tom &amp; Jerry&#8217;s &quot;big&quot; day'>", 'Tom & Jerry’s "big" day'),
        ("<meta property='og:title' content='AT&amp;amp;T results'>", "AT&amp;T results"),  # decoded once, as a browser does
        ("<title>Tom &amp;\n  Jerry</title>", "Tom & Jerry"),
        ("</head><body><h1>Tom &amp; Jerry&#8217;s <em>big</em> meet</h1>", "Tom & Jerry’s big meet"),
        ("</head><body><svg><title>Share icon</title></svg><h1>Dam opens on the river</h1>", "Dam opens on the river"),
    ],
)
def test_html_title_with_entities_is_read_whole(tmp_path, head, title):
    f = tmp_path / "page.html"
    f.write_text(f"<html><head>{head}</head><body>{_BODY}</body></html>")
    assert load_document(f).title == title


def test_text_around_a_script_keeps_the_script_out(tmp_path):
    f = tmp_path / "page.html"
    f.write_text("<p>Before the vote.<script>steal('cookies')</script> After the vote.</p><?unterminated")
    d = load_document(f)
    assert "steal" not in d.text and "unterminated" not in d.text
    assert "Before the vote." in d.text and "After the vote." in d.text
    raw = read_file(str(f))
    assert not any("steal" in sent.text for c in chunk_document(d, raw, 600, 1) for sent in c.sentences)


_FOX = "The quick brown fox jumps over the lazy dog in the park today."
_RIVER = "It then ran away to the river bank where it rested all day."


@pytest.mark.parametrize(
    "inline",
    [
        "<script>var x=1;</script>",
        "<script>var s = 'Hello. World. Again.';</script>",  # sentence ends in the code
        "<style>p { color: red; }</style>",
        "<noscript><img src='pixel.gif'>Please enable JavaScript.</noscript>",
    ],
)
def test_an_inline_skipped_element_does_not_split_its_paragraph(tmp_path, inline):
    f = tmp_path / "a.html"
    f.write_text(f"<html><body><p>{_FOX} {inline} {_RIVER}</p>\n<p>A second paragraph follows here.</p></body></html>")
    d = load_document(f)
    assert d.text.split("\n\n")[:2] == [f"{_FOX} {_RIVER}", "A second paragraph follows here."]
    raw = read_file(str(f))
    sentences = [sent for c in chunk_document(d, raw, 600, 0) for sent in c.sentences]
    assert [sent.text for sent in sentences] == [_FOX, _RIVER, "A second paragraph follows here."]
    for sent in sentences:  # a citation of each sentence is highlighted where it reads
        assert d.text[d.clean_offset(sent.start, raw) :].startswith(sent.text)


def test_a_long_script_inside_a_paragraph_is_never_a_sentence(tmp_path):
    f = tmp_path / "a.html"
    f.write_text(f"<p>Before the code {'word ' * 80}<script>{'var a = 1; ' * 400}</script> after the code {'more ' * 80}done.</p>")
    d = load_document(f)
    sentences = [sent for c in chunk_document(d, read_file(str(f)), 300, 0) for sent in c.sentences]
    assert sentences and all(sent.text and "var" not in sent.text and len(sent.text) <= 300 for sent in sentences)
    assert " ".join(sent.text for sent in sentences) == " ".join(d.text.split())


def test_a_scripts_lines_are_no_lines_of_text(tmp_path):
    f = tmp_path / "a.html"
    f.write_text(f"<html><body><div>{_FOX}\n<script>\nvar a = 1;\nshow('ad');\n</script>\n{_RIVER}</div></body></html>")
    assert load_document(f).text == f"{_FOX}\n\n{_RIVER}"


def test_a_script_at_a_paragraphs_end_leaves_no_trailing_space(tmp_path):
    f = tmp_path / "a.html"
    f.write_text(f"<html><body><p>{_FOX} <script>var x=1;</script>\n</p><p>{_RIVER}</p></body></html>")
    assert load_document(f).text.split("\n\n")[:2] == [_FOX, _RIVER]


def test_page_furniture_inside_a_block_still_ends_it(tmp_path):
    f = tmp_path / "a.html"
    f.write_text(f"<html><body><div>{_FOX} <nav>Home | World</nav> {_RIVER}</div></body></html>")
    assert load_document(f).text.split("\n\n")[:2] == [_FOX, _RIVER]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"   \n\n  ", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "binary file"),
        ("Café au lait".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(RagError, match=message):
        load_document(f)
    result = load_documents([tmp_path])
    assert result.documents == [] and message in result.errors[0] and "bad.txt" in result.errors[0]
