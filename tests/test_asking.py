"""Questions in the forms people ask of the seed articles: yes/no, who/where/how long, a year named, and the wrong entity.

Each test verifies a draft the way the pipeline verifies the model's (``build_answer``) on the real
seed index, with the decision's threshold lifted (``min_answer_score=0``) so that only the checks
under test can withhold the answer.
"""

from __future__ import annotations

import pytest

from rag.answer import pipeline as ans
from rag.answer import verify
from rag.eval import Question, score_answers


@pytest.fixture(scope="module")
def lifted(rag):
    return rag.settings.with_(min_answer_score=0.0)


def verified(rag, settings, question: str, draft: str):
    return ans.build_answer(question, draft, rag.retrieve(question), rag.index.raw, settings)


def test_a_yes_no_question_is_answered_yes_with_the_quote_that_states_it(rag, lifted):
    q = "Did Iran cut off its aid to Hamas after the conflict in Syria began?"
    a = verified(rag, lifted, q, "Answer: yes\nIran cut off its financial and military aid to Hamas [1].")
    assert not a.abstained, a.abstain_reason
    assert a.text.startswith("Yes: ") and "cut off" in a.text
    assert any("cut off its financial and military aid" in c.quote for c in a.citations)


def test_a_no_needs_a_quote_that_states_the_negation(rag, lifted):
    # the 2013 report says Iran resumed its backing: nothing there says it did not
    q = "Did Iran resume its financial backing of Hamas in 2013?"
    a = verified(rag, lifted, q, "Answer: no\nIran did not resume its financial backing of Hamas [1].")
    assert a.abstained and a.abstain_check == "claim" and not a.citations, a.text


def test_a_claim_that_something_did_not_happen_fails_on_a_quote_saying_it_did(rag, lifted):
    q = "What did the Lebanese daily report about Iran's backing of Hamas in 2013?"
    a = verified(rag, lifted, q, "Answer: no backing\nIran has not resumed its financial backing of Hamas [1].")
    assert a.abstained, a.text
    assert any("did not happen" in d.reason for d in a.dropped)


def test_the_leader_of_hezbollah_is_never_answered_with_irans_president(rag, lifted):
    # the model's draft on this question: no article names Hezbollah's leader
    q = "Who is the leader of Hezbollah?"
    draft = (
        "Answer: Hassan Rouhani\nMembers of Iran's Revolutionary Guards and senior Hezbollah figures were among those at the talks in Lebanon [3]. "
        "Hassan Rouhani, considered by many to be a moderate, was reelected as Iran's president in May 2017 [3]."
    )
    a = verified(rag, lifted, q, draft)
    assert a.abstained and "Rouhani" not in a.text and not a.citations
    assert a.abstain_check == "off question" and "hezbollah" in a.abstain_reason


def test_a_short_answer_of_the_wrong_kind_is_not_shown(rag, lifted):
    q = "Why did the Gaza-based group leave Syria?"
    a = verified(rag, lifted, q, "Answer: Hamas\nThe Gaza-based group left Syria in 2013 [1].")
    assert a.abstained and not a.citations, a.text  # "Hamas" gives no reason, and the sentence is not what any article says
    assert verify.wrong_kind(q, "Hamas", frozenset()) and not verify.wrong_kind(q, "Hamas protested the crackdown", frozenset())
    assert verify.wrong_kind("Who leads Hezbollah?", "yes", frozenset())
    assert verify.wrong_kind("How long had the alliance been interrupted?", "the group", frozenset())
    assert not verify.wrong_kind("How long had the alliance been interrupted?", "two years", frozenset())


def test_how_long_is_answered_by_a_quote_that_says_it_in_other_words(rag, lifted):
    q = "How long had the alliance between Hamas and Tehran been interrupted before it was renewed in 2014?"
    a = verified(rag, lifted, q, "Answer: two years\nThe alliance between Hamas and Tehran was interrupted for two years before it was renewed in 2014 [1].")
    assert not a.abstained, a.abstain_reason
    assert "two-year hiatus" in a.citations[0].quote and a.citations[0].date.startswith("2014")


def test_a_year_asked_is_met_by_a_later_report_never_by_an_earlier_one(rag):
    ev = ans.Evidence.build("q", rag.retrieve("Mohammed Morsi ouster military coup"))
    by_year = {s.passage.doc.date[:4]: s for s in ev.srcs if s.passage.doc.date}
    later, earlier = by_year["2014"], by_year["2013"]
    assert verify.about_question("What happened after the coup of July 2013?", [later], ev.common).years_or_later
    assert not verify.about_question("Where were the 2017 discussions held?", [earlier], ev.common).years_or_later


def test_yes_no_questions_are_told_from_choices():
    assert verify.is_yes_no("Did Iran cut off its aid to Hamas?")
    assert verify.is_yes_no("Is Hamas an offshoot of the Muslim Brotherhood?")
    assert not verify.is_yes_no("Did Meshaal or Haniyeh visit Tehran?")
    assert not verify.is_yes_no("Which Hamas leader was going to visit Tehran, Meshaal or Haniyeh?")


def test_the_eval_report_gives_every_abstentions_check_and_a_count_per_check(rag, lifted):
    questions = [
        Question("h", "Who is the leader of Hezbollah?", False),
        Question("m", "Did Iran resume its financial backing of Hamas in 2013?", True, [], [["resumed"]]),
    ]
    answers = [
        verified(rag, lifted, questions[0].question, "Answer: Hassan Rouhani\nHassan Rouhani was reelected as Iran's president in May 2017 [1]."),
        verified(rag, lifted, questions[1].question, "Answer: no\nIran did not resume its financial backing of Hamas [1]."),
    ]
    report = score_answers(questions, answers)
    assert [r.abstain_check for r in report.rows] == ["off question", "claim"]
    assert all(r.abstain_reason for r in report.rows)
    assert report.abstentions == {"claim": {"answerable": 1, "not_answerable": 0}, "off question": {"answerable": 0, "not_answerable": 1}}
    md = report.markdown()
    assert "Why answers were withheld" in md and "| off question | 0 | 1 |" in md
    assert report.to_dict()["rows"][0]["abstain_reason"].startswith("its quotes speak of none")


def test_a_question_that_names_a_capital_is_about_a_quote_that_names_its_country(rag):
    q = "Why did Tehran cut off its financial aid to Hamas?"
    ev = ans.Evidence.build(q, rag.retrieve(q))
    quote = next(s for s in ev.srcs if "cut off its financial and military aid" in s.sentence.text)
    plain = next(s for s in ev.srcs if "Tehran" not in s.sentence.text and "Iran" in s.sentence.text and "financial" in s.sentence.text)
    about = verify.about_question(q, [plain], ev.common)
    assert about.names == 1.0  # "Tehran" asked, "Iran" quoted
    assert verify.about_question("Why did Paris cut off its financial aid to Hamas?", [plain], ev.common).names < 1.0
    assert verify.about_question(q, [quote], ev.common).words > 0
