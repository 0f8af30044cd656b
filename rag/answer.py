"""From passages to a verified answer: context selection, generation, attribution, abstention.

The model's ``[n]`` markers are only a hint. Attribution scores every answer sentence against
every source sentence of the passages (word overlap and embedding similarity, with numbers
required to match) and cites the exact source sentences that support it. No NLI or
attribution model ships in a package here, so this scoring is written by hand.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import embedding, prompts
from .types import Answer, AnswerSentence, Citation, Passage, Sentence

ABSTAIN_TEXT = "The sources do not answer this question."

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:[.,]\d+)*")
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_REFUSAL = re.compile(
    r"NOT IN SOURCES|(sources?|articles?|passages?|context)\s+(do(es)?\s+not|don't|doesn't)\s+(say|mention|contain|provide|answer|specify|include|state)|"
    r"(no|not enough|insufficient)\s+information|cannot (be )?(answer|determine)|can't (answer|determine)|not mentioned",
    re.I,
)
# a small model flags its own padding: "The source also mentions that ..."
_ASIDE = re.compile(r"^((the|this|another|one) (source|article|report|passage)s? (also|further|additionally)\b|(additionally|furthermore|in addition|also),? (the|this) (source|article|report))", re.I)
_MARKER = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")


@lru_cache(maxsize=1)
def _stop() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    extra = {"said", "says", "according", "report", "reported", "also", "would", "could", "one", "two", "its", "it's", "us", "mr", "ms"}
    return frozenset(STOPWORDS_EN) | extra


@lru_cache(maxsize=8192)
def content_words(text: str) -> frozenset[str]:
    """Lower-cased, stemmed content words (numbers kept), for overlap scoring.

    Cached: each source sentence is scored several times per question (context, evidence, support).
    """
    from .retrieval import _stemmer

    words = [w.lower().strip("'’-") for w in _WORD.findall(text)]
    words = [w for w in words if w and w not in _stop() and (len(w) > 2 or w.isdigit())]
    return frozenset(_stemmer().stemWords(words))


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:[.,]\d+)*", text))


@dataclass
class SourceSentence:
    passage: Passage
    sentence: Sentence


# Text that addresses the model rather than the reader: never news, never context or evidence.
_INJECTION = re.compile(
    r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}\b(instructions?|prompts?|rules|context)\b|"
    r"^\W*(system|assistant|user|developer)\s*(prompt|message)?\s*:|<\s*/?\s*(source|system|im_start|im_end)\b|<\|im_(start|end)\|>|"
    r"\byou are (now )?(an? )?(ai|assistant|language model|chatbot)\b|\b(reply|respond|answer) only with\b",
    re.I,
)


def is_injection(text: str) -> bool:
    """True for a sentence written to steer a model (prompt injection) rather than to inform."""
    return bool(_INJECTION.search(text))


def source_sentences(passages: list[Passage]) -> list[SourceSentence]:
    """Every sentence of the passages once, in article order (overlapping chunks share sentences).

    Sentences that try to instruct the model are left out: the model never reads them and
    nothing can cite them.
    """
    seen: dict[tuple[str, int], SourceSentence] = {}
    for p in passages:
        for s in p.chunk.sentences:
            if not is_injection(s.text):
                seen.setdefault((p.doc.id, s.start), SourceSentence(p, s))
    return [seen[k] for k in sorted(seen)]


def _next_in_article(srcs: list[SourceSentence], i: int) -> int | None:
    j = i + 1
    return j if j < len(srcs) and srcs[j].passage.doc.id == srcs[i].passage.doc.id else None


# ---------------------------------------------------------------- context selection
def number_articles(passages: list[Passage]) -> dict[str, int]:
    """Source numbers for the prompt: one per article, oldest first, so answers read in time order."""
    docs = {p.doc.id: p.doc for p in passages}
    order = sorted(docs.values(), key=lambda d: (d.date or "9999", d.id))
    return {d.id: k for k, d in enumerate(order, 1)}


def _relevance(question: str, srcs: list[SourceSentence], qvec: np.ndarray, svecs: np.ndarray) -> np.ndarray:
    """Cosine similarity plus word overlap, plus a bonus when a sentence names the year asked about."""
    q_words = content_words(question)
    years = set(_YEAR.findall(question))
    lex = np.array([len(q_words & content_words(s.sentence.text)) / max(len(q_words), 1) for s in srcs])
    year = np.array([0.15 if years & set(_YEAR.findall(s.sentence.text)) else 0.0 for s in srcs])
    return svecs @ qvec + 0.5 * lex + year


def select_context(question: str, passages: list[Passage], qvec: np.ndarray, svecs: np.ndarray, limit: int) -> dict[str, list[Sentence]]:
    """The sentences most relevant to the question, grouped by article, in reading order.

    Sending sentences rather than whole chunks keeps the prompt short, which is what makes a
    CPU model answer quickly. The sentence after each of the best matches comes along, since
    reasons and quotes often sit in the sentence after the one that matches the question.
    """
    srcs = source_sentences(passages)
    if not srcs:
        return {}
    score = _relevance(question, srcs, qvec, svecs)
    chosen: dict[tuple[str, int], Sentence] = {}

    def take(i: int) -> None:
        if len(chosen) < limit:  # overlapping chunks repeat sentences: key by article and offset
            chosen.setdefault((srcs[i].passage.doc.id, srcs[i].sentence.start), srcs[i].sentence)

    for i in np.argsort(-score)[: max(1, limit // 2)]:
        take(int(i))
        if (j := _next_in_article(srcs, int(i))) is not None:
            take(j)
    for i in np.argsort(-score):
        take(int(i))
    out: dict[str, list[Sentence]] = {}
    for (doc_id, _), sent in sorted(chosen.items()):
        out.setdefault(doc_id, []).append(sent)
    return out


def render_sources(passages: list[Passage], context: dict[str, list[Sentence]], numbers: dict[str, int]) -> list[str]:
    docs = {p.doc.id: p.doc for p in passages}
    return [
        prompts.source_block(numbers[d], docs[d].date, "\n".join(s.text for s in sents))
        for d, sents in sorted(context.items(), key=lambda x: numbers[x[0]])
    ]


def embed_question_and_sources(question: str, passages: list[Passage]) -> tuple[np.ndarray, np.ndarray]:
    """The question's vector and one per source sentence (in ``source_sentences`` order)."""
    vecs = embedding.embed([question] + [s.sentence.text for s in source_sentences(passages)])
    return vecs[0], vecs[1:]


def answer_prompt(question: str, passages: list[Passage], qvec: np.ndarray, svecs: np.ndarray, limit: int) -> list[dict]:
    """The chat messages the answering model gets: selected sentences as numbered sources."""
    context = select_context(question, passages, qvec, svecs, limit)
    return prompts.answer_messages(render_sources(passages, context, number_articles(passages)), question)


# ---------------------------------------------------------------- attribution
def split_answer(text: str) -> list[tuple[str, list[int]]]:
    """Answer sentences with the passage numbers the model cited in each."""
    from .chunking import _punkt

    text = text.strip()
    out: list[tuple[str, list[int]]] = []
    for s, e in _punkt().span_tokenize(text):
        sent = text[s:e].strip()
        cited = [int(n) for m in _MARKER.finditer(sent) for n in re.split(r"\s*,\s*", m.group(1))]
        clean = _MARKER.sub("", sent).strip()
        clean = re.sub(r"\s+([.,;:!?])", r"\1", clean)
        if out and re.fullmatch(r"[\[\]\d,.\s]*", clean):  # a stray marker after the period
            out[-1][1].extend(cited)
            continue
        if clean:
            out.append((clean, cited))
    return out


@dataclass
class Support:
    sources: list[int]  # indices into the source-sentence list
    score: float


def support_score(claim: str, source: str, cosine: float, source_date: str | None = None) -> float:
    """How well ``source`` supports ``claim``, 0..1: word coverage blended with cosine similarity.

    A number the claim states and the source does not (nor its article's date) halves the score.
    """
    words = content_words(claim)
    cover = len(words & content_words(source)) / max(len(words), 1)
    score = 0.6 * cover + 0.4 * max(cosine, 0.0)
    if _numbers(claim) - _numbers(source) - _numbers(source_date or ""):
        score *= 0.5
    return score


def support_scores(claims: list[str], srcs: list[SourceSentence], cvecs: np.ndarray, svecs: np.ndarray) -> np.ndarray:
    """claims × sources matrix of :func:`support_score`."""
    cos = cvecs @ svecs.T if len(srcs) else np.zeros((len(claims), 0))
    return np.array(
        [[support_score(c, s.sentence.text, float(cos[i, j]), s.passage.doc.date) for j, s in enumerate(srcs)] for i, c in enumerate(claims)]
    ).reshape(len(claims), len(srcs))


def attribute(claim_words: set[str], row: np.ndarray, srcs: list[SourceSentence], hinted: set[str], threshold: float) -> Support:
    """Pick the source sentence(s) supporting one claim; the articles the model cited win ties."""
    if not len(row):
        return Support([], 0.0)
    bonus = np.array([0.05 if s.passage.doc.id in hinted else 0.0 for s in srcs])
    ranked = list(np.argsort(-(row + bonus)))
    best = int(ranked[0])
    if row[best] < threshold:
        return Support([], float(row[best]))
    chosen = [best]
    covered = content_words(srcs[best].sentence.text)
    # a claim that joins two facts gets a second citation when it adds what the first lacks
    for j in ranked[1:4]:
        j = int(j)
        gain = (claim_words - covered) & content_words(srcs[j].sentence.text)
        if row[j] >= threshold * 0.8 and len(gain) >= 2 and srcs[j].sentence.text != srcs[best].sentence.text:
            chosen.append(j)
            break
    return Support(chosen, float(row[best]))


def verify(
    question: str,
    draft: str,
    passages: list[Passage],
    raw_of,
    threshold: float,
    svecs: np.ndarray | None = None,
) -> tuple[list[AnswerSentence], list[Citation], str]:
    """Attribute each sentence of ``draft``; returns sentences, citations and the rendered answer text."""
    parts = split_answer(draft)
    srcs = source_sentences(passages)
    if not parts:
        return [], [], ""
    claims = [p[0] for p in parts]
    if svecs is None or len(svecs) != len(srcs):
        vecs = embedding.embed(claims + [s.sentence.text for s in srcs])
        cvecs, svecs = vecs[: len(claims)], vecs[len(claims) :]
    else:  # the source sentences were embedded for context selection already
        cvecs = embedding.embed(claims)
    matrix = support_scores(claims, srcs, cvecs, svecs)
    citations: list[Citation] = []
    by_span: dict[tuple[str, int, int], int] = {}
    sentences: list[AnswerSentence] = []
    rendered: list[str] = []
    by_number = {n: d for d, n in number_articles(passages).items()}
    asked = set(_YEAR.findall(question))
    for i, (claim, hinted) in enumerate(parts):
        if _ASIDE.match(claim):
            continue  # an aside the model itself marks as beside the question
        said = {int(y) for y in _YEAR.findall(claim)}
        if asked and said and min(said) > max(int(y) for y in asked):
            continue  # only about later years than the question asks: off the question, left out
        sup = attribute(content_words(claim), matrix[i], srcs, {by_number[n] for n in hinted if n in by_number}, threshold)
        nums: list[int] = []
        for j in sup.sources:
            src = srcs[j]
            key = (src.passage.doc.id, src.sentence.start, src.sentence.end)
            if key not in by_span:
                raw = raw_of(src.passage.doc.id)
                citations.append(
                    Citation(
                        n=len(citations) + 1,
                        source_file=src.passage.doc.id,
                        title=src.passage.doc.title,
                        outlet=src.passage.doc.outlet,
                        date=src.passage.doc.date,
                        quote=raw[src.sentence.start : src.sentence.end],
                        start=src.sentence.start,
                        end=src.sentence.end,
                        path=src.passage.doc.path,
                        passage=src.passage.n,
                        score=float(matrix[i, j]),
                    )
                )
                by_span[key] = citations[-1].n
            nums.append(by_span[key])
        sentences.append(AnswerSentence(text=claim, citations=nums, supported=bool(nums)))
        rendered.append(claim + ("".join(f" [{n}]" for n in nums) if nums else ""))
    text = " ".join(_attach_marker(r) for r in rendered)
    return sentences, citations, text


def _attach_marker(sentence: str) -> str:
    """Move trailing markers inside the final period: "... Damascus [1]." reads better."""
    m = re.match(r"^(.*?)([.!?]+)((?:\s\[\d+\])+)$", sentence)
    return f"{m.group(1)}{m.group(3)}{m.group(2)}" if m else sentence


# ---------------------------------------------------------------- abstention
def off_topic(question: str, passages: list[Passage], min_relevance: float) -> str | None:
    """Why the passages cannot answer the question, or None when they may."""
    if not passages:
        return "no passages"
    if max(p.score for p in passages) < min_relevance:
        return "no passage is about the question"
    years = set(_YEAR.findall(question))
    if years:
        seen = set()
        for p in passages:
            seen |= set(_YEAR.findall(p.chunk.text))
            if p.doc.date:
                seen.add(p.doc.date[:4])
        if not years & seen:
            return f"no passage mentions {', '.join(sorted(years))}"
    return None


def is_refusal(draft: str) -> bool:
    return bool(_REFUSAL.search(draft[:300]))


# ---------------------------------------------------------------- extractive
def select_evidence(question: str, passages: list[Passage], qvec: np.ndarray, svecs: np.ndarray, most: int = 3) -> list[SourceSentence]:
    """The few source sentences that answer the question best, in time order.

    The best match, the sentence after it (reasons and quotes often follow the sentence that
    matches the question), and other sentences scoring close to the best.
    """
    srcs = source_sentences(passages)
    if not srcs:
        return []
    score = _relevance(question, srcs, qvec, svecs)
    order = [int(i) for i in np.argsort(-score)]
    best = order[0]
    picked = [best]
    nxt = _next_in_article(srcs, best)
    if nxt is not None and score[nxt] >= 0.4 * score[best]:
        picked.append(nxt)
    for i in order[1:]:
        if len(picked) >= most or score[i] < 0.85 * score[best]:
            break
        if i not in picked and all(srcs[i].sentence.text != srcs[j].sentence.text for j in picked):
            picked.append(i)
    picked.sort(key=lambda i: (srcs[i].passage.doc.date or "", srcs[i].passage.doc.id, srcs[i].sentence.start))
    return [srcs[i] for i in picked]


def extractive_draft(question: str, passages: list[Passage], qvec: np.ndarray, svecs: np.ndarray) -> str:
    """An answer with no LLM: the evidence sentences themselves, each marked with its source."""
    numbers = number_articles(passages)
    return " ".join(f"{s.sentence.text} [{numbers[s.passage.doc.id]}]" for s in select_evidence(question, passages, qvec, svecs))


def stream_tokens(llm, messages: list[dict], max_tokens: int, temperature: float, timings: dict, t0: float) -> Iterator[str]:
    first = True
    for tok in llm.stream(messages, max_tokens, temperature):
        if first:
            timings["first_token_s"] = time.perf_counter() - t0
            first = False
        yield tok


def with_evidence(draft: str, evidence: list[SourceSentence], passages: list[Passage]) -> str:
    """The draft, then each evidence sentence whose facts the draft left out, quoted verbatim.

    A 1.5B model paraphrases well but drops or misplaces names; quoting what it left out keeps
    every key fact of the best evidence in the answer, and the quote verifies against itself.
    """
    numbers = number_articles(passages)
    have = set(content_words(draft))
    extra = []
    for src in evidence:
        words = content_words(src.sentence.text)
        if words and len(words - have) / len(words) > 0.3:
            quote = src.sentence.text.strip('“”"')
            extra.append(f"“{quote}” [{numbers[src.passage.doc.id]}]")
            have |= words
    return draft.rstrip() + (" " + " ".join(extra) if extra else "")


def build_answer(
    question: str,
    draft: str,
    passages: list[Passage],
    raw_of,
    threshold: float,
    timings: dict,
    backend: str,
    svecs: np.ndarray | None = None,
) -> Answer:
    """Verify a draft into an Answer, abstaining when the model refused or nothing is supported."""
    t = time.perf_counter()
    if is_refusal(draft):
        return abstained(question, passages, timings, backend)
    sentences, citations, text = verify(question, draft, passages, raw_of, threshold, svecs)
    timings["verify_s"] = time.perf_counter() - t
    if not any(s.supported for s in sentences):
        return abstained(question, passages, timings, backend)
    return Answer(question, text, False, sentences, citations, passages, timings, backend)


def abstained(question: str, passages: list[Passage], timings: dict, backend: str) -> Answer:
    return Answer(question, ABSTAIN_TEXT, True, [], [], passages, timings, backend)
