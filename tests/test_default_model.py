"""End to end with the default local model (Qwen2.5-Coder-1.5B through llama.cpp)."""

from __future__ import annotations

import pytest

from rag.eval import Question, evaluate

from .conftest import Q2012, read_file

pytestmark = pytest.mark.slow


def test_2012_question_names_damascus_and_assad_and_cites_the_2013_article(rag):
    a = rag.ask(Q2012)
    assert a.backend == "local" and not a.abstained
    assert "Damascus" in a.text and "Assad" in a.text
    assert any(c.source_file == "000_7d385fec3d1c01e6.txt" for c in a.citations)
    for c in a.citations:
        assert read_file(c.path)[c.start : c.end] == c.quote
        assert c.date  # every citation is dated
    assert a.timings["first_token_s"] > 0


def test_dev_set_quality_with_the_default_backend(rag, dev_questions):
    questions = [Question(**{k: q[k] for k in ("id", "question", "answerable", "gold_docs", "key_facts", "reference")}) for q in dev_questions]
    report = evaluate(rag, questions)
    m = report.metrics
    assert m["key_fact_recall"] >= 0.85, report.markdown()
    assert m["citation_precision"] >= 0.9, report.markdown()
    assert m["cited"] >= 0.9
    # every out-of-corpus question withheld; of the answerable ones at most one (the fitted decision finds "As-Safir" in a
    # quote that speaks of a quarter of the question, 47% likely right), and any withheld says which check and why
    assert m["abstention_recall"] == 1.0 and m["answered_when_answerable"] >= 0.9, report.markdown()
    assert all(r.abstain_check and r.abstain_reason for r in report.rows if r.abstained)
