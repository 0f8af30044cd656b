"""News-scale retrieval: `rag bench realtimeqa` on one real week, dates against the question's date, dense lead vectors."""

from __future__ import annotations

import json
import shutil

import pytest

from rag import RAG
from rag.bench.rtqa_report import METRIC_KEYS, STAT_KEYS
from rag.index.reader import Index
from rag.index.writer import build
from rag.settings import Settings

from .conftest import Q2012, SEEDS, SHARED, need_shared
from .test_cli import rag_cmd

DATA = SHARED / "bench" / "realtimeqa"
WEEK = "20220617"  # 10 questions with a gold page, one of them the video-ad form; 191 pages


@pytest.fixture(scope="module")
def week_run(tmp_path_factory) -> tuple[dict, object]:
    need_shared(DATA / "weeks")
    out = tmp_path_factory.mktemp("rtqa")
    p = rag_cmd("bench", "realtimeqa", "--data", str(DATA), "--weeks", WEEK, "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout), out


def test_bench_reports_every_figure_for_both_sides(week_run):
    result, out = week_run
    keys = set(METRIC_KEYS) | set(STAT_KEYS) | {"n_questions", "n_excluded"}
    assert keys <= set(result) and keys - {"n_excluded"} <= set(result["peer"])
    assert result["n_questions"] == 9 and result["n_excluded"] == 1
    for side in (result, result["peer"]):
        assert 0 <= side["hits@1"] <= side["hits@5"] <= side["hits@10"] <= 1
        assert side["n_chunks"] > 1000 and side["build_s"] > 0 and 0 < side["query_p50_ms"] <= side["query_p95_ms"]
        assert side["peak_rss_mb"] > 100
    # the week's gold articles are found: 9 of 9 in the top 10 articles, most at the top
    assert result["hits@10"] == 1.0 and result["mrr@10"] >= 0.6
    assert result["mrr@10"] >= result["peer"]["mrr@10"]
    assert result["ratios"]["build_speedup"] > 1


def test_bench_writes_a_report_naming_what_it_left_out(week_run):
    _, out = week_run
    md = (out / "realtimeqa.md").read_text()
    assert "| Hits@5 |" in md and "llama-index" in md
    assert "20220617_9" in md and "ad-feedback form" in md
    assert (out / "realtimeqa.png").read_bytes()[:4] == b"\x89PNG"
    full = json.loads((out / "realtimeqa.json").read_text())
    assert len(full["rows"]) == 9 and all("rank" in r for r in full["rows"])


def test_bench_names_a_wrong_data_folder(tmp_path):
    p = rag_cmd("bench", "realtimeqa", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert p.returncode != 0 and "--data" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "empty").mkdir()
    p = rag_cmd("bench", "realtimeqa", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert p.returncode != 0 and "no RealTime QA weeks" in p.stderr and "Traceback" not in p.stderr
    if (DATA / "weeks").is_dir():
        p = rag_cmd("bench", "realtimeqa", "--data", str(DATA), "--weeks", "19990101", "--out", str(tmp_path / "o"))
        assert p.returncode != 0 and "19990101" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------- dates
STORY = "The Harbour City Herons won the national basketball championship on {day}, beating the Valley Foxes {score} in the final game."


@pytest.fixture()
def two_seasons(tmp_path):
    """The same kind of story in two seasons, each dated by its sidecar."""
    d = tmp_path / "news"
    d.mkdir()
    for name, date, day, score in (("a.txt", "2021-06-10", "Thursday", "98-91"), ("b.txt", "2022-06-16", "Friday", "104-99")):
        body = f"Herons take the title\n\n{STORY.format(day=day, score=score)} Fans filled the streets of the city.\n"
        (d / name).write_text(body)
        (d / f"{name}.meta.json").write_text(json.dumps({"date": date}))
    build(tmp_path / "idx", [d])
    return RAG.open(tmp_path / "idx")


def test_the_question_date_picks_that_weeks_report(two_seasons):
    q = "Which team won the national basketball championship this week?"
    assert two_seasons.retrieve(q, top_k=1, as_of="2022-06-18")[0].doc.id == "b.txt"
    assert two_seasons.retrieve(q, top_k=1, as_of="2021-06-12")[0].doc.id == "a.txt"


def test_a_this_week_question_is_not_answered_from_a_report_a_year_old(two_seasons):
    q = "Which team won the national basketball championship this week?"
    fresh = two_seasons.ask(q, as_of="2022-06-18", llm="extractive")
    assert not fresh.abstained and "Herons" in fresh.text and fresh.citations[0].date == "2022-06-16"
    # a year later the same question finds the same reports, but neither tells of that week
    late = two_seasons.ask(q, as_of="2023-06-17", llm="extractive")
    assert late.abstained and "16 June 2022" in late.abstain_reason


def test_a_bad_question_date_is_a_clear_error(seed_index):
    p = rag_cmd("ask", Q2012, "--llm", "extractive", "--as-of", "June 2014", "--index", str(seed_index))
    assert p.returncode != 0 and "as_of must be an ISO date" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------- dense vectors for each article's lead
def test_passages_past_an_articles_lead_are_still_found_and_scored(tmp_path):
    shutil.copytree(SEEDS, tmp_path / "seeds")
    lead = Settings.from_env(dense_chunks_per_article=2)
    build(tmp_path / "lead", [tmp_path / "seeds"], lead)
    idx = Index.open(tmp_path / "lead")
    assert len(idx.dense_ids) == idx.vectors.ntotal == 8 < len(idx.chunks)
    # a fact in 002's last passage, beyond its two embedded ones: BM25 finds it and its cosine is computed
    last = max((c for c in idx.chunks if c.doc_id.startswith("002")), key=lambda c: c.start)
    words = last.sentences[-1].text  # its own last sentence: the first one repeats the passage before
    rag = RAG(idx, lead)
    assert rag.retriever.sparse(words, 5)[0][0] == idx.chunks.index(last)  # BM25 ranks it first
    # with no dense rank of its own it fuses below passages both retrievers found, but it is returned
    passages = rag.retrieve(words, top_k=8)
    hit = next(p for p in passages if p.chunk.id == last.id)
    assert hit.score > 0.5
    # an answer retrieves without embedding it and scores it with its sentences: the same passages, the same scores
    answer = rag.ask(words, llm="extractive", top_k=8)
    assert [(p.chunk.id, pytest.approx(p.score, abs=1e-5)) for p in passages] == [(p.chunk.id, p.score) for p in answer.passages]
    # and an answer that abstains before reading the sentences still reports every passage's score
    gone = rag.ask(words + " in 1850?", llm="extractive", top_k=8)
    assert gone.abstained and "1850" in gone.abstain_reason and last.id in {p.chunk.id for p in gone.passages}
    assert all(isinstance(p.to_dict()["score"], float) for p in gone.passages)


def test_the_open_scorer_accepts_acronyms_number_words_and_surnames():
    from rag.bench.rtqa_open import judge_open

    # 2025, "What is the world's top infectious killer?": the model answered "TB"
    killer = ["Malaria", "Measles", "Ebola", "Tuberculosis"]
    assert judge_open("TB: the World Health Organization names it the top infectious killer", killer, 3)
    assert not judge_open("TB is the top infectious killer", killer, 0)  # an acronym names its own word only
    # 2022, "Global superband BTS have split after how many years together?" ("BTS" abbreviates none of the choices)
    years = ["Seven years", "Eight years", "Nine years", "Ten years"]
    assert judge_open("BTS split after nine years together", years, 2) and judge_open("after 9 years", years, 2)
    assert not judge_open("BTS split after nine years together", years, 1)
    # a surname no other choice shares names the person; one that two choices share names neither
    actors = ["Adrien Brody", "Timothée Chalamet", "Ralph Fiennes", "Colman Domingo"]
    assert judge_open("Brody broke the record for the longest acceptance speech", actors, 0)
    assert not judge_open("Roosevelt was president", ["Franklin D. Roosevelt", "Theodore Roosevelt", "John F. Kennedy", "Abraham Lincoln"], 0)
