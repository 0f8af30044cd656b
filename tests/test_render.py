"""What the sources panel shows, rendered without a browser."""

from __future__ import annotations

from rag import RAG
from ui import render

# Inline tags and entities before and inside the quoted sentence: its raw span is longer than what a reader sees.
HTML_ARTICLE = """<html><head><title>Zorblat Bridge opens to traffic</title></head><body><article>
<h1>Zorblat Bridge opens to traffic</h1>
<p>The <a href="https://example.org/places/vesna">Zorblat Bridge</a> over the Vesna river opened to traffic on 4&nbsp;May 2019 &mdash; three years late.</p>
<p>Officials said the <em>bridge</em> cost &euro;40 million. Mayor <a href="https://example.org/people/brandt">Ilse Brandt</a> cut the ribbon at the ceremony.</p>
</article></body></html>
"""
SHOWN_QUOTE = "Mayor Ilse Brandt cut the ribbon at the ceremony."


def test_an_html_articles_quote_is_marked_where_it_stands(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "zorblat.html").write_text(HTML_ARTICLE, encoding="utf-8")
    r = RAG.build(tmp_path / "index", [corpus], llm="extractive")
    a = r.ask("Who cut the ribbon at the Zorblat Bridge?")
    c = next(c for c in a.citations if "Brandt" in c.quote)
    doc, raw = r.index.docs[c.source_file], r.index.raw(c.source_file)
    assert "<a href" in c.quote  # the quote is raw HTML, as the file holds it
    assert doc.text[doc.clean_offset(c.start, raw) : doc.clean_offset(c.end, raw)] == SHOWN_QUOTE
    for whole in (True, False):  # the whole article, and the passage
        html = render.citation_html(a, 0, c.n, r.index.docs, whole=whole, raw=r.index.raw)
        assert f">{SHOWN_QUOTE}</mark>" in html, html
