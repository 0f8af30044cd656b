"""Candidate answers scored by the model: the right likelihoods, an unchanged model afterwards, and the entities of the kind asked."""

from __future__ import annotations

import math

import pytest

from rag import RAG
from rag.answer import candidates, prompts
from rag.answer.drafts import RecordingLLM, ReplayLLM
from rag.answer.llm import LocalLLM
from rag.settings import Settings
from rag.types import RagError

SOURCE = prompts.source_block(1, "2012-03-01", "Hamas leader Khaled Meshaal left Damascus in February 2012 after the group refused to back Bashar al-Assad.")
MESSAGES = prompts.answer_messages([SOURCE], "Who leads Hamas?")


@pytest.fixture(scope="module")
def small() -> LocalLLM:
    return LocalLLM(Settings.from_env(local_model="smollm"))


def test_the_model_scores_what_it_writes_above_what_it_would_not(small):
    written = "".join(small.stream(MESSAGES, 24, 0.0))
    first_line = written.split("\n", 1)[0]
    assert first_line.lower().startswith("answer:"), written
    own = first_line.split(":", 1)[1].strip()
    mine, other = small.score(MESSAGES, candidates.HEAD, [f" {own}\n", " Tuesday afternoon in Oslo\n"])
    assert mine < 0 and other < 0  # log-probabilities
    assert mine > other + 2, (own, mine, other)  # its greedy answer is far likelier than an unrelated phrase


def test_scoring_leaves_the_model_as_it_was(small):
    """Scoring between two drafts of the same prompt changes neither draft: the cache is put back."""
    before = "".join(small.stream(MESSAGES, 24, 0.0))
    scores = small.score(MESSAGES, candidates.HEAD, [" Khaled Meshaal\n", " Damascus\n"])
    again = small.score(MESSAGES, candidates.HEAD, [" Khaled Meshaal\n", " Damascus\n"])
    after = "".join(small.stream(MESSAGES, 24, 0.0))
    assert after == before
    assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(scores, again))


def test_candidates_are_entities_of_the_kind_asked_and_not_the_question_s_own():
    sentences = ["Hamas leader Khaled Meshaal left Damascus in February 2012 after the group refused to back Bashar al-Assad."]
    who = candidates.gather("Who leads Hamas?", "Meshaal", sentences)
    assert who[0] == "Meshaal" and "Bashar al-Assad" in who and "Damascus" in who
    assert "Hamas" not in who  # the question names it: it cannot be the answer
    assert "February 2012" not in who  # a date does not say who
    when = candidates.gather("When did Hamas leave Damascus?", "2012", sentences)
    assert "February 2012" in when and "Bashar al-Assad" not in when


def test_a_candidate_holding_the_model_s_answer_counts_as_its_answer():
    r = candidates.Ranking(["2012", "early 2012", "March 2011"], [-0.5, -1.2, -6.0], [True, True, False])
    s = r.signals()
    assert s["cand_share"] > 0.99 and s["cand_margin"] == pytest.approx(5.5)
    assert candidates._same_answer("Khaled Meshaal", "Hamas leader Khaled Meshaal") and not candidates._same_answer("Iran", "Iranian officials")


def test_scores_are_recorded_and_replayed_and_an_unscored_candidate_is_refused(small, tmp_path):
    rec = RecordingLLM(small, tmp_path)
    scored = rec.score(MESSAGES, candidates.HEAD, [" Khaled Meshaal\n", " Damascus\n"])
    replay = ReplayLLM(tmp_path)
    assert replay.score(MESSAGES, candidates.HEAD, [" Khaled Meshaal\n", " Damascus\n"]) == scored
    with pytest.raises(RagError, match="record the run again"):
        replay.score(MESSAGES, candidates.HEAD, [" Bashar al-Assad\n"])


def test_a_who_question_records_the_ranked_candidates_and_their_signals(seed_index):
    rag = RAG.open(seed_index, llm="local", local_model="smollm", max_answer_tokens=48, rank_candidates=True)
    a = rag.ask("Who declared that Hamas had formed a joint command with Islamic Jihad?")
    assert a.short_answer, a.draft
    assert len(a.candidates) >= 2 and a.candidates[0][0] == a.short_answer and len(a.candidates[0]) == 3
    assert math.isclose(sum(p for _, p, _ in a.candidates), 1.0, abs_tol=1e-3)
    assert 0.0 <= a.signals["cand_share"] <= 1.0 and 0.0 <= a.signals["pick_share"] <= 1.0 and "ranking_s" in a.timings
    assert math.isclose(sum(q for _, _, q in a.candidates), 1.0, abs_tol=1e-3)  # the choice picked, over the lettered candidates
    off = RAG.open(seed_index, llm="local", local_model="smollm", max_answer_tokens=48)  # the default: no ranking
    b = off.ask("Who declared that Hamas had formed a joint command with Islamic Jihad?")
    assert not b.candidates and "cand_share" not in b.signals and b.draft == a.draft  # the draft itself is the same
