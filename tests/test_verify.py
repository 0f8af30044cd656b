"""Support means the source says it: claim checks, abstention on related-but-not-answering passages, composition."""

from __future__ import annotations

import pytest

from rag import RAG
from rag.answer import pipeline as ans
from rag.answer import verify
from rag.answer.evidence import Evidence
from rag.index.writer import build

from .conftest import read_file

OCEAN = "Memorial Day weekend in Florida\n\nMay 30, 2022\n\nFlorida beaches were packed over the Memorial Day weekend as tourists flocked to the coast. The state's wildlife commission warned boaters to stay sober on the water.\n"
RHODE = "Rhode Island opens its beaches\n\nMay 27, 2022\n\nRhode Island, known as the Ocean State, opened its state beaches on Friday. Lifeguards will be on duty from 9 a.m.\n"


def _rag_of(d, name: str, articles: dict[str, str]) -> RAG:
    """A RAG over an index of ``articles`` (file name -> text) written under ``d / name``."""
    (d / name).mkdir()
    for file, text in articles.items():
        (d / name / file).write_text(text)
    build(d / f"index-{name}", [d / name])
    return RAG.open(d / f"index-{name}")


@pytest.fixture(scope="module")
def beaches(tmp_path_factory):
    d = tmp_path_factory.mktemp("beaches")
    return _rag_of(d, "a", {"florida.txt": OCEAN}), _rag_of(d, "b", {"florida.txt": OCEAN, "rhode.txt": RHODE})


def _draft(rag, question, draft):
    return ans.build_answer(question, draft, rag.retrieve(question), rag.index.raw, rag.settings)


def test_a_wrong_answer_cited_to_a_related_passage_is_withheld(beaches):
    only_florida, _ = beaches
    q = "Which US state is known as the Ocean State?"
    a = _draft(only_florida, q, "Answer: Florida\nFlorida is known as the Ocean State [1].")
    # the passage shares "Florida" and "state" with the claim, but does not say it is the Ocean State
    assert a.abstained and a.citations == [] and "do not answer" in a.text
    assert a.abstain_reason and a.passages  # the reason, and the related passages to read
    assert a.dropped and a.dropped[0].text.startswith("Florida is known")


def test_the_right_answer_stands_with_the_quote_that_states_it(beaches):
    _, both = beaches
    q = "Which US state is known as the Ocean State?"
    a = _draft(both, q, "Answer: Rhode Island\nRhode Island is known as the Ocean State [1].")
    assert not a.abstained and a.short_answer == "Rhode Island"
    assert [c.source_file for c in a.citations] == ["rhode.txt"]
    assert "Ocean State" in a.citations[0].quote
    assert read_file(a.citations[0].path)[a.citations[0].start : a.citations[0].end] == a.citations[0].quote


def test_the_extractive_backend_abstains_on_an_unrelated_corpus(beaches):
    only_florida, _ = beaches
    a = only_florida.ask("Who won the city marathon in 2022?", llm="extractive")
    assert a.abstained and not a.citations


@pytest.mark.parametrize(
    "question, draft, says",
    [
        # the wrong person: the source names al-Zahar
        (
            "Who declared that Hamas had formed a joint command with Islamic Jihad?",
            "Answer: Ismail Haniyeh\nHamas leader Ismail Haniyeh declared that Hamas had formed a joint command with Islamic Jihad [1].",
            "haniyeh",
        ),
        # the wrong description: As-Safir is a Lebanese daily
        (
            "Which newspaper reported in 2013 that Iran had resumed its financial backing of Hamas?",
            "Answer: As-Safir\nThe Iranian daily As-Safir reported in 2013 that Iran had resumed its financial backing of Hamas [1].",
            "Iranian daily",
        ),
        # the wrong year
        (
            "Since when has the US State Department listed Hamas as a foreign terrorist organization?",
            "Answer: 1998\nThe US State Department has listed Hamas as a foreign terrorist organization since 1998 [1].",
            "1998",
        ),
    ],
)
def test_a_claim_whose_quote_names_someone_or_something_else_is_withheld(rag, question, draft, says):
    a = _draft(rag, question, draft)
    assert a.abstained, a.text
    assert says in a.abstain_reason


def test_the_right_claims_are_supported(rag):
    a = _draft(
        rag,
        "Who declared that Hamas had formed a joint command with Islamic Jihad?",
        "Answer: Mahmoud al-Zahar\nHamas official Mahmoud al-Zahar declared that his movement had formed a joint command with Islamic Jihad [1].",
    )
    assert not a.abstained and "al-Zahar" in a.citations[0].quote
    a = _draft(
        rag,
        "Which newspaper reported in 2013 that Iran had resumed its financial backing of Hamas?",
        "Answer: As-Safir\nAs-Safir, a pro-Hezbollah Lebanese daily, reported that Iran had resumed its financial backing of Hamas [1].",
    )
    assert not a.abstained and {c.source_file for c in a.citations} == {"000_7d385fec3d1c01e6.txt"}


def test_an_invented_causal_link_is_dropped_and_recorded(rag):
    q = "Why did Egyptian security stop coordinating with Hamas?"
    a = _draft(
        rag,
        q,
        "Answer: the attacks on police and army posts\n"
        "Egyptian security stopped coordinating with Hamas given the attacks on police and army posts and the plan to occupy Sinai [1]. "
        "The incident prompted Hamas political bureau official Izzat Al-Rishq to warn of a humanitarian crisis [2].",
    )
    assert not a.abstained and "Sinai" in a.text
    assert "Al-Rishq" not in a.text
    assert any("Al-Rishq" in d.text and "link" in d.reason for d in a.dropped)


def test_checks_name_what_the_quote_lacks(rag):
    q = "Which Hamas leader was slated to visit Tehran according to the 2017 reports?"
    ev = Evidence.build(q, rag.retrieve(q))
    j = next(i for i, s in enumerate(ev.srcs) if "Haniyeh" in s.sentence.text)
    assert verify.check("Hamas leader Ismail Haniyeh was slated to visit Tehran.", q, ev.srcs, [j], ev.common).supported
    bad = verify.check("Hamas leader Khaled Meshaal was slated to visit Tehran in 2018.", q, ev.srcs, [j], ev.common)
    assert not bad.supported and {"khaled meshaal", "2018"} <= set(bad.missing)


def test_a_question_over_years_gets_a_dated_list_in_time_order(rag):
    a = rag.ask("How did relations between Iran and Hamas change between 2012 and 2017?", llm="extractive")
    assert a.kind == "timeline" and not a.abstained
    lines = a.text.splitlines()
    assert len(lines) == len(a.sentences) >= 4
    years = [int(next(w for w in line.replace(":", " ").split() if w.isdigit() and len(w) == 4)) for line in lines]
    assert years == sorted(years) and {2012, 2013, 2014, 2017} <= set(years)
    for s in a.sentences:  # every entry cited, every citation dated and exact
        assert s.citations and s.supported
    for c in a.citations:
        assert c.date and read_file(c.path)[c.start : c.end] == c.quote


def test_reports_that_disagree_are_named_with_outlet_and_date(rag):
    a = rag.ask("Which Hamas leader was expected to visit Tehran?", llm="extractive")
    assert a.kind == "differing" and a.text.startswith("Reports differ")
    assert "Meshaal" in a.text and "Haniyeh" in a.text
    assert "The Algemeiner, 25 March 2014" in a.text and "The Jerusalem Post, 30 May 2017" in a.text
    # with a year asked, only that year's report answers
    a = rag.ask("Which Hamas leader was slated to visit Tehran according to the 2017 reports?", llm="extractive")
    assert a.kind == "answer" and "Haniyeh" in a.text and "Meshaal" not in a.text


def test_answers_hold_no_off_question_padding(rag):
    a = rag.ask("Which Hamas leader was slated to visit Tehran according to the 2017 reports?", llm="extractive")
    assert "Saudi" not in a.text and len(a.sentences) == 1


def test_quotes_come_from_the_generation_the_question_retrieved_from(tmp_path, corpus):
    """An upload published between retrieval and the answer cannot break the quotes."""
    from rag.index.writer import remove

    rag = RAG.build(tmp_path / "index", [corpus])
    stream = rag.stream("Who declared that Hamas had formed a joint command with Islamic Jihad?", llm="extractive")
    next(stream)  # retrieved, drafted; not yet verified
    text = (corpus / "000_7d385fec3d1c01e6.txt").read_text()
    remove(tmp_path / "index", ["000_7d385fec3d1c01e6.txt"])
    assert rag.refresh()
    answer = next(stream)
    assert not answer.abstained
    for c in answer.citations:
        assert text[c.start : c.end] == c.quote


def test_the_direct_answer_comes_first_even_when_the_sentence_does_not_name_it(beaches):
    _, both = beaches
    q = "Which US state is known as the Ocean State?"
    a = _draft(both, q, "Answer: Rhode Island\nThe state is known as the Ocean State [1].")
    # the sentence does not name the answer; its quote does, and says more: the answer leads, then the quote
    assert not a.abstained and a.text.startswith("Rhode Island: “Rhode Island, known as the Ocean State")
    assert [d.reason for d in a.dropped] == ["its quote says more; shown instead"]


def test_a_sentence_that_adds_what_no_source_says_is_replaced_by_the_quote_stating_its_answer(beaches):
    _, both = beaches
    q = "Which US state is known as the Ocean State?"
    a = _draft(both, q, "Answer: Rhode Island\nRhode Island has been known as the Ocean State since 1896 [1].")
    assert not a.abstained and "1896" not in a.text
    assert a.text.startswith("Rhode Island: “Rhode Island, known as the Ocean State, opened its state beaches on Friday.”")
    assert a.sentences[0].quoted and a.citations[0].source_file == "rhode.txt"
    assert a.dropped and "1896" in a.dropped[0].text and "1896" in a.dropped[0].reason and "replaced by the quote" in a.dropped[0].reason


EASTBROOK = (
    "Eastbrook elects a mayor\n\nMarch 12, 2024\n\nVoters in Eastbrook elected Jane Morrow as mayor on Sunday with 58 percent of the vote.\n\n"
    "Mayor Jane Morrow opened the Eastbrook solar farm in May.\n"
)


@pytest.fixture(scope="module")
def eastbrook(tmp_path_factory):
    return _rag_of(tmp_path_factory.mktemp("eastbrook"), "a", {"eastbrook.txt": EASTBROOK})


@pytest.mark.parametrize(
    "draft",
    [
        "Answer: Victor Hale\nVictor Hale opened the Eastbrook solar farm in May [1].",
        "Mayor Victor Hale opened the Eastbrook solar farm in May [1].",
        # half the name matches, the other half is someone else's
        "Answer: Jane Hale\nMayor Jane Hale opened the Eastbrook solar farm in May [1].",
        "Jane Hale opened the Eastbrook solar farm in May [1].",
    ],
)
def test_a_claim_naming_another_person_than_its_quote_is_withheld(eastbrook, draft):
    a = _draft(eastbrook, "Who opened the Eastbrook solar farm?", draft)
    assert a.abstained and "Hale" not in a.text and not a.citations
    assert "hale" in a.abstain_reason


def test_a_claim_naming_the_person_its_quote_names_stands(eastbrook):
    for draft in ("Answer: Jane Morrow\nMayor Jane Morrow opened the Eastbrook solar farm in May [1].", "Morrow opened the Eastbrook solar farm in May [1]."):
        a = _draft(eastbrook, "Who opened the Eastbrook solar farm?", draft)
        assert not a.abstained and "Morrow" in a.citations[0].quote


TOWN_2021 = {
    "bus.txt": "City council approves new bus lanes\n\nMarch 3, 2021\n\nThe city council approved three new bus lanes on Tuesday. Work will start in the summer and cost 4 million dollars.\n",
    "bakery.txt": "Local bakery wins award\n\nJune 12, 2021\n\nA family bakery on Main Street won the regional bread award in 2021. The owners said they would hire two more bakers.\n",
    "library.txt": "Library extends opening hours\n\nSeptember 8, 2021\n\nThe central library will open until 9 p.m. on weekdays from October. The change follows a survey of 2,000 readers.\n",
    "storm.txt": "Storm damages harbour\n\nNovember 20, 2021\n\nA winter storm damaged two piers in the harbour on Friday. No one was hurt, the coast guard said.\n",
}


@pytest.fixture(scope="module")
def town_2021(tmp_path_factory):
    d = tmp_path_factory.mktemp("town")
    (d / "a").mkdir()
    for name, text in TOWN_2021.items():
        (d / "a" / name).write_text(text)
    build(d / "index", [d / "a"])
    return RAG.open(d / "index")


def test_the_extractive_backend_abstains_when_no_sentence_is_about_what_was_asked(town_2021):
    # every article is from 2021 and one says "won ... in 2021": none is about a marathon
    a = town_2021.ask("Who won the city marathon in 2021?", llm="extractive")
    assert a.abstained and not a.citations, a.text
    a = town_2021.ask("Who won the regional bread award?", llm="extractive")
    assert not a.abstained and "bakery" in a.citations[0].quote


def test_a_dated_question_answered_only_from_a_report_years_older_needs_stronger_evidence(beaches):
    _, both = beaches
    q = "Which US state is known as the Ocean State?"
    draft = "Answer: Rhode Island\nRhode Island is known as the Ocean State [1]."
    passages = both.retrieve(q)
    lifted = both.settings.with_(min_answer_score=0.0)
    timely = ans.build_answer(q, draft, passages, both.index.raw, lifted, as_of="2022-06-01")
    # the same answer, the question dated three years after its only report: the fitted chance that it is right drops
    late = ans.build_answer(q, draft, passages, both.index.raw, lifted, as_of="2025-06-01")
    assert late.signals["report_days"] > 3 * 365 - 7
    assert late.signals["score"] < timely.signals["score"]
    # so an answer whose evidence only just carries it when timely is withheld when the report is old
    strict = both.settings.with_(min_answer_score=(timely.signals["score"] + late.signals["score"]) / 2)
    assert not ans.build_answer(q, draft, passages, both.index.raw, strict, as_of="2022-06-01").abstained
    old = ans.build_answer(q, draft, passages, both.index.raw, strict, as_of="2025-06-01")
    assert old.abstained and "3 years older than the question" in old.abstain_reason and not old.citations
