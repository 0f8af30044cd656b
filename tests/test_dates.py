"""Dates that filter (since/until, the "latest" rule) and metadata that one copy of a report fills in for another."""

from __future__ import annotations

import json

import pytest

from rag import RAG
from rag.dates import ArticleDates, DateRange, parse_range
from rag.index.layout import FORMAT_VERSION
from rag.index.reader import Index
from rag.index.writer import build, remove
from rag.types import Document, RagError

from .test_cli import rag_cmd

FUNDING = "Did Iran resume financial support for Hamas?"
LATEST = "What is the latest on Iran–Hamas ties?"
S2013, S2014, S2017, S2017_COPY = "000_7d385fec3d1c01e6.txt", "002_0cd934058d5d1ad9.txt", "003_40096b35d0a24c1b.txt", "001_fcf509d334208b0a.txt"

BODY = (
    "The Zorblat Bridge over the Vesna river opened to traffic on 4 May 2019. Mayor Ilse Brandt cut the ribbon at the ceremony. "
    "The bridge took three years to build and cost 40 million crowns, the city council said.\n"
)
RIBBON = "Who cut the ribbon at the Zorblat Bridge?"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    """Two copies of one report, each stating what the other does not, and an undated article."""
    d = tmp_path_factory.mktemp("bridge")
    corpus = d / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Zorblat Bridge opens to traffic\n\n" + BODY)  # title; outlet from its sidecar; no date
    (corpus / "a.txt.meta.json").write_text(json.dumps({"outlet": "Vesna Courier"}))
    (corpus / "b.txt").write_text("May 5, 2019\n\n" + BODY)  # date only
    (corpus / "c.txt").write_text(
        "Zorblat Bridge tolls announced\n\nDrivers crossing the Zorblat Bridge will pay a toll of two crowns from June, "
        "the Vesna city council said. Cyclists cross free of charge.\n"
    )
    report = build(d / "index", [corpus])
    assert not report.errors
    return d


# ------------------------------------------------------------------ since / until
def test_since_until_cites_only_the_article_of_that_year(seed_index, rag):
    everything = rag.ask(FUNDING, llm="extractive")
    assert {c.date[:4] for c in everything.citations} > {"2014"}  # unfiltered, another year is cited too
    p = rag_cmd("ask", FUNDING, "--since", "2014-01-01", "--until", "2014-12-31", "--llm", "extractive", "--json", "--index", str(seed_index))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert not out["abstained"] and out["citations"]
    assert {c["source_file"] for c in out["citations"]} == {S2014}
    assert all(c["outlet"] == "The Algemeiner" and c["date"] == "2014-03-25" for c in out["citations"])


def test_the_range_fills_the_top_k_from_articles_in_it(rag):
    unfiltered = rag.retrieve(FUNDING, top_k=8)
    assert {p.doc.id for p in unfiltered} != {S2014}
    passages = rag.retrieve(FUNDING, top_k=8, since="2014", until="2014")  # a year: all of it
    assert len(passages) == 8 and {p.doc.id for p in passages} == {S2014}
    month = rag.retrieve(FUNDING, top_k=3, since="2013-08-20", until="2013-09")  # an article dated "2013-08" may be from the 20th
    assert {p.doc.id for p in month} == {S2013}


def test_undated_articles_are_left_out_of_a_range_and_the_answer_says_so(bridge):
    rag = RAG.open(bridge / "index", llm="extractive")
    assert rag.ask(RIBBON).notes == []
    p = rag_cmd("ask", RIBBON, "--since", "2019", "--llm", "extractive", "--index", str(bridge / "index"))
    assert p.returncode == 0, p.stderr
    assert "Brandt" in p.stdout and "Note: 1 undated article was left out of the date range." in p.stdout
    answer = rag.ask("How much will drivers pay to cross the Zorblat Bridge?", since="2019")
    assert "c.txt" not in {c.source_file for c in answer.citations} and "c.txt" not in {x.doc.id for x in answer.passages}
    assert answer.notes == ["1 undated article was left out of the date range."]


def test_a_range_with_no_article_abstains_without_calling_the_model(rag):
    # an endpoint nothing listens on: any call to the model would fail
    answer = rag.ask(FUNDING, since="2015", until="2016", llm="openai", openai_base_url="http://127.0.0.1:9/v1")
    assert answer.abstained and answer.passages == []
    assert answer.abstain_reason == "no indexed article was published between 1 January 2015 and 31 December 2016"
    assert "generation_s" not in answer.timings


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", FUNDING, "--since", "2014-13"], "since '2014-13' is not a date: use YYYY-MM-DD, YYYY-MM or YYYY"),
        (["ask", FUNDING, "--until", "last week"], "until 'last week' is not a date"),
        (["ask", FUNDING, "--since", "2015", "--until", "2014"], "since 2015 is after until 2014"),
        (["list", "--since", "2014/03"], "since '2014/03' is not a date"),
    ],
)
def test_a_bad_date_is_one_line(seed_index, args, message):
    p = rag_cmd(*args, "--llm", "extractive", "--index", str(seed_index)) if args[0] == "ask" else rag_cmd(*args, "--index", str(seed_index))
    assert p.returncode == 1 and message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_the_api_refuses_a_bad_date_the_same_way(rag):
    with pytest.raises(RagError, match="since '2014-02-30' is not a date"):
        rag.ask(FUNDING, since="2014-02-30", llm="extractive")


def test_a_range_holds_an_article_when_their_periods_overlap_whatever_the_shape_of_its_date():
    # read once per index as day numbers; each must agree with DateRange.holds on the date as written
    shapes = [None, "", "2013", "2013-08", "2013-08-20", "2013-12-31", "2014-01-01", "2014-02-30", "2014-13", "no date", "2017-05-30"]
    docs = [Document(id=f"{k}.txt", path="", content_hash="", date=d) for k, d in enumerate(shapes)]
    articles = ArticleDates.of(docs)
    ranges = [parse_range("2013-08-20", "2013-09"), parse_range("2014", "2014"), parse_range(None, "2013-12-31"), parse_range("2017-05-30")]
    ranges += [DateRange(r.since, r.until, keep_undated=True) for r in ranges]
    for rng in ranges:
        assert articles.holding(rng).tolist() == [rng.holds(d.date) for d in docs], rng
    assert str(articles.newest()) == "2017-05-30"
    assert str(articles.newest(today=parse_range("2014-01-01").since)) == "2014-01-01"  # the newest before "today", cut to it


def test_the_recency_prior_halves_every_half_life_and_sinks_articles_from_after_the_question(rag):
    ret = rag.retriever
    at = {doc_id: k for k, doc_id in enumerate(ret.article_dates.ids)}
    articles = [at[S2014], at[S2013], at[S2017]]  # 2014-03-25; "2013-08", counted from the 15th; 2017-05-30
    prior = ret._recency("2014-04-08", articles).tolist()
    assert prior[0] == 0.5 and prior[1] == pytest.approx(0.5 ** (236 / 14)) and prior[2] == -1.0
    assert ret._recency("2014-03-24", articles)[0] == 1.0  # a day's grace for time zones
    assert ret._recency("2014-03-23", articles)[0] == -1.0


# ------------------------------------------------------------------ the "latest" rule
def test_latest_cites_the_2017_reports_first(rag):
    answer = rag.ask(LATEST, llm="extractive")
    assert not answer.abstained and answer.citations
    assert answer.citations[0].source_file == S2017 and answer.citations[0].date == "2017-05-30"
    assert answer.passages[0].doc.date == "2017-05-30" and S2017_COPY in answer.passages[0].also_reported_by
    assert answer.notes == ["The newest reports on the question are ranked first."]
    # without the word, the 2014 report leads for the same subject
    assert rag.ask("What is known about Iran–Hamas ties?", llm="extractive").citations[0].source_file != S2017


def test_this_week_is_the_week_before_as_of_or_the_newest_article(rag):
    week = "What happened this week between Iran and Hamas?"
    assert {p.doc.date for p in rag.retrieve(week)} == {"2017-05-30"}
    assert {p.doc.date for p in rag.retrieve(week, as_of="2014-03-28")} == {"2014-03-25"}
    answer = rag.ask(week, llm="extractive")
    assert answer.notes == ["“this week” read as 24 May 2017 to 30 May 2017, up to the newest article."]
    # an explicit range replaces the window
    assert {p.doc.id for p in rag.retrieve(week, since="2013", until="2014")} <= {S2013, S2014}


# ------------------------------------------------------------------ metadata from another copy
def test_a_duplicate_report_shows_the_date_and_outlet_of_its_copy_in_rag_list(seed_index):
    p = rag_cmd("list", "--index", str(seed_index))
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if S2017_COPY in x)
    assert line.startswith("2017-05-30  The Jerusalem Post")
    assert f"(same report as {S2017}; date and outlet from that copy)" in line
    docs = Index.open(seed_index).docs
    assert docs[S2017_COPY].inherited == {"date": S2017, "outlet": S2017}
    assert docs[S2017].inherited == {} and docs[S2013].inherited == {}  # 000 has no other copy: nothing to fill in


def test_a_citation_says_which_metadata_came_from_another_copy(bridge):
    p = rag_cmd("ask", RIBBON, "--llm", "extractive", "--index", str(bridge / "index"))
    assert p.returncode == 0, p.stderr
    assert "a.txt: Zorblat Bridge opens to traffic (Vesna Courier, 2019-05-05; date from the copy b.txt)" in p.stdout
    answer = RAG.open(bridge / "index", llm="extractive").ask(RIBBON)
    c = next(c for c in answer.citations if c.source_file == "a.txt")
    assert (c.source_file, c.date, c.inherited) == ("a.txt", "2019-05-05", {"date": "b.txt"})
    assert answer.to_dict()["citations"][c.n - 1]["inherited"] == {"date": "b.txt"}
    listing = rag_cmd("list", "--index", str(bridge / "index")).stdout
    assert "b.txt  Zorblat Bridge opens to traffic  (same report as a.txt; outlet and title from that copy)" in listing


def test_inherited_metadata_goes_when_its_copy_goes(bridge, tmp_path):
    import shutil

    idx = tmp_path / "index"
    shutil.copytree(bridge / "index", idx)
    remove(idx, ["b.txt"])
    a = Index.open(idx).docs["a.txt"]
    assert a.date is None and a.inherited == {} and a.outlet == "Vesna Courier"


def test_an_index_of_the_previous_format_is_rebuilt(bridge, tmp_path):
    import shutil

    idx = tmp_path / "index"
    shutil.copytree(bridge / "index", idx)
    gen = idx / (idx / "CURRENT").read_text().strip()
    manifest = json.loads((gen / "manifest.json").read_text())
    (gen / "manifest.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION - 1}))
    with pytest.raises(RagError, match=f"has format {FORMAT_VERSION - 1}, this version reads {FORMAT_VERSION}"):
        Index.open(idx)
    assert len(build(idx).added) == 3  # `rag index` rebuilds it from its recorded sources
    assert Index.open(idx).docs["a.txt"].inherited == {"date": "b.txt"}


# ------------------------------------------------------------------ rag list
def _ids(stdout: str) -> list[str]:
    return [line.split("chunks  ")[1].split()[0] for line in stdout.splitlines()]


def test_rag_list_sorts_and_filters(seed_index, bridge):
    def listing(*args, index=seed_index):
        p = rag_cmd("list", *args, "--index", str(index))
        assert p.returncode == 0, p.stderr
        return p

    assert _ids(listing().stdout) == [S2013, S2014, S2017_COPY, S2017]
    assert _ids(listing("--sort", "outlet").stdout) == [S2014, S2017_COPY, S2017, S2013]  # The Algemeiner, The Jerusalem Post, then none
    assert _ids(listing("--sort", "title").stdout)[0] == S2014 and _ids(listing("--sort", "title").stdout)[-1] == S2013
    assert _ids(listing("--outlet", "algemeiner").stdout) == [S2014]
    assert _ids(listing("--since", "2014", "--until", "2016").stdout) == [S2014]
    assert _ids(listing("--until", "2013-08").stdout) == [S2013]
    p = listing("--since", "2019", index=bridge / "index")
    assert _ids(p.stdout) == ["a.txt", "b.txt"] and "1 undated article left out of the date range" in p.stderr


def test_a_date_dropped_as_out_of_range_is_named_in_one_warning_line(tmp_path, caplog):
    from rag.ingest.corpus import load_documents

    (tmp_path / "dam.txt").write_text("Dam opens\n\nThe Arlo dam opened on Tuesday, the water board said.\n")
    (tmp_path / "dam.txt.meta.json").write_text('{"date": "99999999999"}')
    (tmp_path / "bridge.jsonl").write_text('{"text": "The Berro bridge closed on Monday, the city said.", "date": "9999-12-31"}\n')
    with caplog.at_level("WARNING", logger="rag.ingest.cleaning"):
        result = load_documents([tmp_path])
    assert [d.date for d in result.documents] == [None, None] and not result.errors
    lines = sorted(r.getMessage() for r in caplog.records)
    assert len(lines) == 2 and all("\n" not in line and "undated" in line for line in lines)
    assert lines[0].startswith("bridge.jsonl line 1: date '9999-12-31'") and lines[1].startswith("dam.txt: date '99999999999'")
