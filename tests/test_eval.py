"""`rag eval` metrics on a tiny corpus whose right answers are known, checked against hand counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rag import RAG
from rag.eval import OverlapJudge, Question, evaluate, load_questions, score_answers
from rag.index.writer import build
from rag.types import Answer, AnswerSentence, Citation, RagError

BRIDGE = "Zorblat Bridge opens\n\nMay 5, 2019\n\nThe Zorblat Bridge over the Vesna river opened on 4 May 2019. Mayor Ilse Brandt cut the ribbon at the ceremony. The bridge cost 40 million euros.\n"
STRIKE = "Port Melo dock strike\n\nJune 2, 2020\n\nDock workers in Port Melo went on strike on Monday over pay. The union leader Tomas Riva said the strike would last a week.\n"

QUESTIONS = [
    Question("q1", "Who cut the ribbon at the Zorblat Bridge opening?", True, ["bridge.txt"], [["Brandt"]], "Mayor Ilse Brandt."),
    Question("q2", "Why did dock workers in Port Melo strike, and who led them?", True, ["strike.txt"], [["pay"], ["Riva"]], "Over pay; Tomas Riva."),
    Question("q3", "What is the capital of Australia?", False),
    Question("q4", "How many moons does Neptune have?", False),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "articles").mkdir()
    (d / "articles" / "bridge.txt").write_text(BRIDGE)
    (d / "articles" / "strike.txt").write_text(STRIKE)
    build(d / "index", [d / "articles"])
    return d


def cite(n: int, doc: str, text: str, sentence: str) -> Citation:
    start = text.index(sentence)
    return Citation(n, doc, None, None, None, sentence, start, start + len(sentence))


def test_metrics_match_a_hand_count(tiny):
    rag = RAG.open(tiny / "index")
    ribbon = "Mayor Ilse Brandt cut the ribbon at the ceremony."
    strike = "Dock workers in Port Melo went on strike on Monday over pay."
    cost = "The bridge cost 40 million euros."
    answers = [
        Answer(QUESTIONS[0].question, "Mayor Ilse Brandt cut the ribbon [1].", False,
               [AnswerSentence("Mayor Ilse Brandt cut the ribbon.", [1], True)],
               [cite(1, "bridge.txt", BRIDGE, ribbon)], rag.retrieve(QUESTIONS[0].question), {"total_s": 1.0}, "test"),
        # a wrong citation: the bridge's cost does not support a sentence about the strike
        Answer(QUESTIONS[1].question, "Dock workers struck over pay [1] [2].", False,
               [AnswerSentence("Dock workers in Port Melo went on strike over pay.", [1, 2], True)],
               [cite(1, "strike.txt", STRIKE, strike), cite(2, "bridge.txt", BRIDGE, cost)], rag.retrieve(QUESTIONS[1].question), {"total_s": 3.0}, "test"),
        Answer(QUESTIONS[2].question, "The sources do not answer this question.", True, [], [], [], {"total_s": 0.5}, "test"),
        # a missed abstention: an answer where the sources have none
        Answer(QUESTIONS[3].question, "Neptune has 14 moons.", False, [AnswerSentence("Neptune has 14 moons.", [], False)], [], [], {"total_s": 2.0}, "test"),
    ]
    m = score_answers(QUESTIONS, answers, OverlapJudge()).metrics
    assert m["key_fact_recall"] == pytest.approx((1 + 0.5) / 2)  # q2 names no Riva
    assert m["citation_precision"] == pytest.approx(2 / 3)  # 3 citations, the bridge one is wrong
    assert m["cited"] == 1.0
    assert m["abstention_recall"] == 0.5  # q4 was answered
    assert m["abstention_precision"] == 1.0  # the one abstention was right
    assert m["answered_when_answerable"] == 1.0
    assert m["hits@1"] == 1.0 and m["mrr"] == 1.0
    # ALCE: both sentences are entailed by their citations; the bridge citation is irrelevant
    assert m["alce_citation_recall"] == 1.0
    assert m["alce_citation_precision"] == pytest.approx((1 + 0.5) / 2)

    answers[1].citations.pop()
    answers[1].sentences[0].citations = [1]
    fixed = score_answers(QUESTIONS, answers, OverlapJudge()).metrics
    assert fixed["citation_precision"] == 1.0 and fixed["alce_citation_precision"] == 1.0


def test_answer_shape_matches_a_hand_count():
    """Sentences per answer, repeats, off-question sentences, failed claims and clean answers, counted by hand."""
    from rag.types import Dropped

    ribbon = "Mayor Ilse Brandt cut the ribbon at the ceremony."
    strike = "Dock workers in Port Melo went on strike on Monday over pay."
    riva = "The union leader Tomas Riva said the strike would last a week."
    cost = "The bridge cost 40 million euros."
    clean = Answer(QUESTIONS[0].question, "Mayor Ilse Brandt cut the ribbon [1].", False,
                   [AnswerSentence("Mayor Ilse Brandt cut the ribbon.", [1], True)],
                   [cite(1, "bridge.txt", BRIDGE, ribbon)], [], {}, "test")
    padded = Answer(QUESTIONS[1].question, "...", False,
                    [AnswerSentence("Dock workers in Port Melo went on strike over pay, led by Tomas Riva.", [1, 2], True),
                     AnswerSentence("Dock workers in Port Melo struck over pay.", [1], True),  # says it again
                     AnswerSentence("The bridge cost 40 million euros.", [3], True)],  # off the question
                    [cite(1, "strike.txt", STRIKE, strike), cite(2, "strike.txt", STRIKE, riva), cite(3, "bridge.txt", BRIDGE, cost)],
                    [], {}, "test", dropped=[Dropped("Riva earns 40 million euros.", "not stated by the sources: it states 40, which its quote does not")])
    report = score_answers(QUESTIONS[:2], [clean, padded])
    first, second = report.rows
    assert (first.n_sentences, first.repeated, first.off_question, first.failed_claims, first.clean) == (1, 0, 0, 0, True)
    assert (second.n_sentences, second.repeated, second.off_question, second.failed_claims, second.clean) == (3, 1, 1, 1, False)
    m = report.metrics
    assert m["sentences_per_answer"] == 2.0 and m["repeated_sentences"] == 1 and m["off_question_sentences"] == 1
    assert m["failed_claims"] == 1 and m["clean_answers"] == 0.5
    assert "| repeated |" in report.markdown()


def test_end_to_end_on_the_tiny_set(tiny):
    rag = RAG.open(tiny / "index")
    report = evaluate(rag, QUESTIONS, judge=OverlapJudge(), llm="extractive")
    m = report.metrics
    assert m["hits@1"] == 1.0 and m["citation_precision"] == 1.0
    assert m["abstention_recall"] == 1.0 and m["answered_when_answerable"] == 1.0
    assert report.rows[0].key_fact_recall == 1.0  # "Mayor Ilse Brandt cut the ribbon ..." is quoted
    assert report.judge == "overlap" and "judged by: overlap" in report.markdown()
    assert {"retrieval_s", "total_s"} <= set(report.latency)


def test_cli_writes_report_json_chart_and_gates_on_minimums(tiny, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps(q.__dict__) for q in QUESTIONS))
    out = tmp_path / "out"
    base = [sys.executable, "-m", "rag.cli", "eval", str(qa), "--index", str(tiny / "index"), "--llm", "extractive", "--judge", "overlap", "--out", str(out)]
    ok = subprocess.run([*base, "--min", "citation_precision=0.9"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert {p.name for p in out.iterdir()} == {"report.md", "report.json", "report.png"}
    data = json.loads((out / "report.json").read_text())
    assert data["metrics"]["hits@1"] == 1.0 and len(data["rows"]) == 4
    bad = subprocess.run([*base, "--min", "key_fact_recall=1.01"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "key_fact_recall" in bad.stderr and "below the minimum 1.01" in bad.stderr


def test_malformed_qa_line_is_named(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "ok?"}\n{"answerable": true}\n')
    with pytest.raises(RagError, match="line 2"):
        load_questions(qa)
