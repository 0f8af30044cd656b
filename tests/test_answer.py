"""Retrieval, verified citations and abstention, with the extractive backend (no LLM)."""

from __future__ import annotations

import pytest

from rag.answer import pipeline as ans
from rag.answer.evidence import number_articles
from rag.types import RagError

from .conftest import Q2012, read_file


def test_duplicate_reports_never_fill_the_top_results_twice(rag):
    for q in ["Which Hamas leader was slated to visit Tehran?", "How did Hamas respond to Donald Trump?", Q2012]:
        passages = rag.retrieve(q, top_k=5)
        texts = [p.chunk.text for p in passages]
        assert len(set(texts)) == len(texts)
        ids = [p.doc.id for p in passages]
        # 001 and 003 are one report: at most one of them appears, the other is named as a duplicate
        assert not ({"001_fcf509d334208b0a.txt", "003_40096b35d0a24c1b.txt"} <= set(ids))
    jp = [p for p in rag.retrieve("How did Hamas respond to Donald Trump?") if p.doc.id.startswith("003")]
    assert jp and "001_fcf509d334208b0a.txt" in jp[0].also_reported_by


def test_2012_question_cites_the_2013_article_with_exact_quotes(rag):
    a = rag.ask(Q2012, llm="extractive")
    assert not a.abstained
    assert "Damascus" in a.text
    assert any(c.source_file == "000_7d385fec3d1c01e6.txt" and c.date.startswith("2013") for c in a.citations)
    for c in a.citations:
        assert read_file(c.path)[c.start : c.end] == c.quote
        assert f"[{c.n}]" in a.text
    assert all(s.supported and s.citations for s in a.sentences)
    assert {"retrieval_s", "total_s"} <= set(a.timings)


@pytest.mark.parametrize("q", ["What is the capital of Australia?", "How many rockets did Hamas fire at Israel in 2021?"])
def test_out_of_corpus_questions_are_abstained(rag, q):
    a = rag.ask(q, llm="extractive")
    assert a.abstained and a.citations == [] and "do not answer" in a.text


def test_invented_and_wrong_citation_markers_are_corrected_or_dropped(rag):
    passages = rag.retrieve(Q2012)
    numbers = number_articles(passages)
    n_000 = numbers["000_7d385fec3d1c01e6.txt"]
    wrong = next(n for d, n in numbers.items() if d != "000_7d385fec3d1c01e6.txt")
    draft = (
        f"Hamas left its headquarters in Damascus in early 2012 [{wrong}]. "
        "Iran considered the move an act of treason [17]. "
        f"The moon is made of green cheese, astronomers confirmed in 1969 [{n_000}]."
    )
    # the threshold lifted: attribution is under test here, not the decision
    a = ans.build_answer(Q2012, draft, passages, rag.index.raw, rag.settings.with_(min_answer_score=0.0))
    first, second = a.sentences
    assert first.supported and second.supported
    cited = {c.n: c for c in a.citations}
    assert cited[first.citations[0]].source_file == "000_7d385fec3d1c01e6.txt"  # the wrong [n] was corrected
    assert "Damascus" in cited[first.citations[0]].quote
    assert "treason" in cited[second.citations[0]].quote  # the invented [17] was replaced
    # the sentence no source states is not shown; the answer records that it was left out, and why
    assert "[17]" not in a.text and "green cheese" not in a.text
    assert [d.text for d in a.dropped] == ["The moon is made of green cheese, astronomers confirmed in 1969."]
    assert "not stated by the sources" in a.dropped[0].reason


def test_model_saying_the_sources_do_not_answer_abstains(rag):
    passages = rag.retrieve(Q2012)
    a = ans.build_answer(Q2012, "NOT IN SOURCES", passages, rag.index.raw, rag.settings)
    assert a.abstained and not a.citations


@pytest.mark.parametrize("q, message", [("", "empty"), ("   \n\t ", "empty"), ("x" * 2001, "2,001 characters.*2,000")])
def test_bad_questions_get_clear_errors(rag, q, message):
    with pytest.raises(RagError, match=message):
        rag.ask(q, llm="extractive")


def test_llama_index_retriever_adapter(rag):
    nodes = rag.retriever.as_llama_retriever().retrieve(Q2012)
    assert nodes and nodes[0].node.metadata["source_file"].endswith(".txt")
    assert nodes[0].node.start_char_idx is not None
