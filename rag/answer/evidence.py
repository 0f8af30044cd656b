"""The evidence stage: a question's source sentences, embedded once and scored for relevance, and the few the model reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..index import embedding
from ..index.embedding import embed_text
from ..ingest import hostile
from ..text import content_words, years
from ..types import Message, Passage, Sentence, SourceSentence
from . import prompts

# A sentence's relevance: its cosine to the question, plus this weight times the share of the question's
# words it holds (the embedder alone ranks a sentence on the topic above the one that answers)...
OVERLAP_WEIGHT = 0.5
YEAR_BONUS = 0.15  # ... plus this when it names a year the question asks about
# The sentence after the best one is taken when it scores at least this share of the best: reasons and
# quotes often follow the sentence that matches the question.
NEXT_SENTENCE_SHARE = 0.4
CLOSE_SHARE = 0.85  # other sentences are taken while they score at least this share of the best


def source_sentences(passages: list[Passage]) -> list[SourceSentence]:
    """Every sentence of the passages once, in article order (overlapping chunks share sentences).

    Text planted to steer a model is left out (:mod:`rag.ingest.hostile`): the model never reads it and
    nothing can cite it, whichever backend answers.
    """
    seen: dict[tuple[str, int], SourceSentence] = {}
    for p in passages:
        for s in p.chunk.sentences:
            seen.setdefault((p.doc.id, s.start), SourceSentence(p, s))
    kept = hostile.keep(list(seen.values()))
    return sorted(kept, key=lambda s: (s.passage.doc.id, s.sentence.start))


def number_articles(passages: list[Passage]) -> dict[str, int]:
    """Source numbers for the prompt: one per article, oldest first, so answers read in time order."""
    docs = {p.doc.id: p.doc for p in passages}
    order = sorted(docs.values(), key=lambda d: (d.date or "9999", d.id))
    return {d.id: k for k, d in enumerate(order, 1)}


@dataclass
class Evidence:
    """A question's source sentences, built once: their vectors, relevance to the question, and article numbers."""

    question: str
    passages: list[Passage]
    srcs: list[SourceSentence]
    qvec: np.ndarray
    vecs: np.ndarray  # one row per source sentence
    relevance: np.ndarray
    numbers: dict[str, int]  # article id -> its source number in the prompt
    common: frozenset[str]  # words the sources use in lower case: a capitalised one at a sentence start is no name
    as_of: str | None = None  # the question's date (YYYY-MM-DD), when known

    @classmethod
    def build(cls, question: str, passages: list[Passage], as_of: str | None = None) -> Evidence:
        """Embed the question and its source sentences; a passage still without a score (retrieved with
        ``embed_unstored=False``) is embedded in the same call and gets its cosine to the question."""
        srcs = source_sentences(passages)
        unscored = [p for p in passages if p.score is None]
        vecs = embedding.embed([question] + [s.sentence.text for s in srcs] + [embed_text(p.chunk, p.doc) for p in unscored])
        qvec, svecs = vecs[0], vecs[1 : len(srcs) + 1]
        for p, v in zip(unscored, vecs[len(srcs) + 1 :] @ qvec):
            p.score = float(v)
        common = frozenset(w for s in srcs for w in re.findall(r"(?<![\w'’-])[a-z][a-z'’-]+", s.sentence.text))
        return cls(question, passages, srcs, qvec, svecs, _relevance(question, srcs, qvec, svecs), number_articles(passages), common, as_of)

    def next_in_article(self, i: int) -> int | None:
        j = i + 1
        return j if j < len(self.srcs) and self.srcs[j].passage.doc.id == self.srcs[i].passage.doc.id else None

    def before(self, i: int) -> int | None:
        """The sentence before source sentence ``i`` in its article, if the passages hold it."""
        j = i - 1
        return j if j >= 0 and self.srcs[j].passage.doc.id == self.srcs[i].passage.doc.id else None

    def context(self, limit: int) -> dict[str, list[Sentence]]:
        """The sentences most relevant to the question, grouped by article, in reading order.

        Sending sentences rather than whole chunks keeps the prompt short, which is what makes a
        CPU model answer quickly. The sentence after each of the best matches comes along, since
        reasons and quotes often sit in the sentence after the one that matches the question.
        """
        chosen: dict[tuple[str, int], Sentence] = {}

        def take(i: int) -> None:
            if len(chosen) < limit:  # overlapping chunks repeat sentences: key by article and offset
                chosen.setdefault((self.srcs[i].passage.doc.id, self.srcs[i].sentence.start), self.srcs[i].sentence)

        order = [int(i) for i in np.argsort(-self.relevance)]
        for i in order[: max(1, limit // 2)]:
            take(i)
            if (j := self.next_in_article(i)) is not None:
                take(j)
        for i in order:
            take(i)
        out: dict[str, list[Sentence]] = {}
        for (doc_id, _), sent in sorted(chosen.items()):
            out.setdefault(doc_id, []).append(sent)
        return out

    def read(self, limit: int) -> list[str]:
        """The sentences the model reads (:meth:`context`), most relevant first."""
        chosen = {(d, s.start) for d, sents in self.context(limit).items() for s in sents}
        out: list[str] = []
        for i in np.argsort(-self.relevance):
            key = (self.srcs[int(i)].passage.doc.id, self.srcs[int(i)].sentence.start)
            if key in chosen:
                chosen.discard(key)
                out.append(self.srcs[int(i)].sentence.text)
        return out

    def render(self, context: dict[str, list[Sentence]]) -> list[str]:
        docs = {p.doc.id: p.doc for p in self.passages}
        return [
            prompts.source_block(self.numbers[d], docs[d].date, "\n".join(s.text for s in sents))
            for d, sents in sorted(context.items(), key=lambda x: self.numbers[x[0]])
        ]

    def messages(self, limit: int) -> list[Message]:
        """The chat messages the answering model gets: the selected sentences as numbered sources."""
        return prompts.answer_messages(self.render(self.context(limit)), self.question)

    def best(self, most: int = 3) -> list[int]:
        """The few source sentences that answer the question best, in time order.

        The best match, the sentence after it (reasons and quotes often follow the sentence that
        matches the question), and other sentences scoring close to the best.
        """
        if not self.srcs:
            return []
        score = self.relevance
        order = [int(i) for i in np.argsort(-score)]
        top = order[0]
        picked = [top]
        nxt = self.next_in_article(top)
        if nxt is not None and score[nxt] >= NEXT_SENTENCE_SHARE * score[top]:
            picked.append(nxt)
        for i in order[1:]:
            if len(picked) >= most or score[i] < CLOSE_SHARE * score[top]:
                break
            if i not in picked and all(self.srcs[i].sentence.text != self.srcs[j].sentence.text for j in picked):
                picked.append(i)
        return picked


def _relevance(question: str, srcs: list[SourceSentence], qvec: np.ndarray, svecs: np.ndarray) -> np.ndarray:
    """Cosine similarity plus word overlap, plus a bonus when a sentence names the year asked about."""
    q_words = content_words(question)
    asked = years(question)
    lex = np.array([len(q_words & content_words(s.sentence.text)) / max(len(q_words), 1) for s in srcs])
    year = np.array([YEAR_BONUS if asked & years(s.sentence.text) else 0.0 for s in srcs])
    return (svecs @ qvec + OVERLAP_WEIGHT * lex + year) if len(srcs) else np.zeros(0)
