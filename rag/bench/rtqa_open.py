"""RealTime QA asked open (without its choices) through the product, and judged: a reply is right when it names the right choice and no other."""

from __future__ import annotations

import re
import statistics
import sys

from ..measure import peak_rss_mb, percentile
from ..settings import Settings
from ..types import ABSTAIN_TEXT


def passage_dict(p) -> dict:
    return {"doc": p.doc.id, "date": p.doc.date, "title": p.doc.title, "text": p.chunk.text}


def progress_bar(items, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="q", disable=not enabled, file=sys.stderr)


# ---------------------------------------------------------------- open answers
# Scoring as the data set's README states it: an open answer is right when it names the right
# choice better than any other (token recall of the right choice >= 0.5 and above every other
# choice's), wrong otherwise, unless the system abstained.
_CHOICE_STOP = frozenset("a an the of and or in on at to for by with from as is are was were be his her its their this that".split())
_NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def choice_tokens(text: str, every_word: bool = False) -> frozenset[str]:
    """Stemmed words and numbers of a choice or an answer, for scoring (commas in numbers dropped, number words as digits).

    Single letters and common words are left out unless ``every_word``.
    """
    from ..text import stemmer

    words = [_NUMBER_WORDS.get(w, w) for w in (w.replace(",", "") for w in re.findall(r"\d+(?:[.,]\d+)*|[a-z]+", text.lower()))]
    if not every_word:
        words = [w for w in words if (len(w) > 1 or w.isdigit()) and w not in _CHOICE_STOP]
    return frozenset(stemmer().stemWords(words))


def choice_recall(choice: str, text: str) -> float:
    """Share of the choice's words found in ``text`` (a choice made only of short or common words, "AT&T", on all of them)."""
    want, every = choice_tokens(choice), False
    if not want:
        want, every = choice_tokens(choice, every_word=True), True
    return len(want & choice_tokens(text, every)) / len(want) if want else 0.0


def judge_open(text: str, choices: list[str], right: int) -> bool:
    """True when ``text`` names ``choices[right]`` better than any other choice (an acronym of a choice names it whole)."""
    recalls = [1.0 if abbreviates(c, text) else choice_recall(c, text) for c in choices]
    return recalls[right] >= 0.5 and all(recalls[right] > r for i, r in enumerate(recalls) if i != right)


_ACRONYM = re.compile(r"\b[A-Z]{2,6}\b")


def abbreviates(choice: str, text: str) -> bool:
    """Whether ``text`` names ``choice`` by an acronym: "WHO" for "World Health Organization", "TB" for "Tuberculosis".

    A choice of several words: the initials of its words (common ones skipped). One long word: the
    acronym's letters in order in it, the first letter first (how "TB" abbreviates "Tuberculosis").
    The choice must not be written out in ``text`` itself, and must be longer than the acronym.
    """
    words = [w for w in re.findall(r"[A-Za-z]+", choice) if w.lower() not in _CHOICE_STOP]
    if not words or choice.isupper():
        return False
    for token in _ACRONYM.findall(text):
        low = token.lower()
        if len(words) >= 2 and "".join(w[0].lower() for w in words) == low:
            return True
        if len(words) == 1 and len(words[0]) > len(low) + 2 and words[0][0].lower() == low[0] and _in_order(low, words[0].lower()):
            return True
    return False


def _in_order(letters: str, word: str) -> bool:
    at = 0
    for ch in letters:
        at = word.find(ch, at) + 1
        if at == 0:
            return False
    return True


MONTH_ABBR = {m[:3]: m for m in "january february march april may june july august september october november december".split()}


def phrase(text: str) -> str:
    """Lower-case words joined by single spaces, month abbreviations spelt out ("Jan. 19" = "January 19")."""
    return " " + " ".join(MONTH_ABBR.get(w, w) for w in re.findall(r"[a-z0-9]+", text.lower())) + " "


def occurs_in(choice: str, texts: list[str]) -> bool:
    """Whether the choice's words occur as a phrase in one of the texts (case and punctuation ignored)."""
    want = phrase(choice)
    return want.strip() != "" and any(want in (t if t.startswith(" ") else phrase(t)) for t in texts)


def answer_open(
    index_dir: str, questions: list[dict], settings: Settings, progress: bool, record: str | None = None, replay: str | None = None
) -> dict:
    """Ask each question through ``RAG.ask`` (no choices shown, the quiz date as ``as_of``) and score the answers.

    The questions are asked with the answer-score threshold lifted, and the configured threshold
    (``settings.min_answer_score``) is applied to each answer's recorded score afterwards: the same
    comparison ``RAG.ask`` makes last, so the verdicts are those of the configured setting, and
    one run also gives the whole trade-off of right against wrong as the threshold moves.
    """
    from ..answer.decision import threshold
    from ..api import RAG

    needed = threshold(settings.min_answer_score)
    rag = RAG.open(index_dir, settings.with_(min_answer_score=0.0))
    if record or replay:  # the drafts kept, or read back instead of the model (rag.answer.drafts)
        from ..answer.drafts import RecordingLLM, ReplayLLM

        rag.use_llm(RecordingLLM(rag.llm(rag.settings), record) if record else ReplayLLM(replay, rag.settings.llm))
    rag.warm()
    rag.ask("warm-up question about the news", as_of=questions[0]["date"] if questions else None)  # evaluates the fixed prompt prefix
    rows = []
    for q in progress_bar(questions, "open answers", progress):
        a = rag.ask(q["question"], as_of=q["date"])
        right_choice = q["choices"][q["answer"]]
        right = not a.abstained and judge_open(a.text, q["choices"], q["answer"])
        score = a.signals.get("score")
        unlifted = "abstained" if a.abstained else ("right" if right else "wrong")
        withheld = not a.abstained and score is not None and score < needed
        rows.append(
            {
                "id": q["id"],
                "question": q["question"],
                "date": q["date"],
                "choices": q["choices"],
                "answer": q["answer"],
                "answerable": q["answerable"],
                "in_corpus": q["in_corpus"],
                "verdict": "abstained" if withheld else unlifted,
                "verdict_any_score": unlifted,  # what the answer would be with no score threshold
                "score": score,
                "text": ABSTAIN_TEXT if withheld else a.text,
                "draft_verdict": None if not a.draft else ("right" if judge_open(a.draft, q["choices"], q["answer"]) else "wrong"),
                "draft": a.draft,
                "confidence": a.confidence,
                "short_answer": a.short_answer,
                "abstain_reason": a.abstain_reason,
                "abstain_check": (a.abstain_check or "other") if a.abstained else ("weak evidence" if withheld else None),
                "kind": a.kind,
                "signals": a.signals,
                "candidates": a.candidates,
                "dropped": [{"text": d.text, "reason": d.reason} for d in a.dropped],
                "citations": [{"source_file": c.source_file, "date": c.date, "quote": c.quote} for c in a.citations],
                "quotes_answer": right and not withheld and any(choice_recall(right_choice, c.quote) >= 0.5 for c in a.citations),
                "in_front": occurs_in(right_choice, [p.chunk.text for p in a.passages]),
                "in_context": occurs_in(right_choice, _context_sentences(q["question"], a, settings)),
                "first_token_s": a.timings.first_token_s,
                "total_s": a.timings.total_s,
                "passages": [passage_dict(p) for p in a.passages],
            }
        )
    return {"n_questions": len(rows), "min_answer_score": needed, **open_summary(rows), "peak_rss_mb": peak_rss_mb(), "rows": rows}


def _context_sentences(question: str, a, settings: Settings) -> list[str]:
    """The sentences the model was given for ``a`` (the same selection again, untimed)."""
    from ..answer.evidence import Evidence

    if not a.passages:
        return []
    return [s.text for sents in Evidence.build(question, a.passages).context(settings.max_context_sentences).values() for s in sents]


def _shares(rows: list[dict]) -> dict:
    n = len(rows)
    out: dict = {"n": n}
    for v in ("right", "abstained", "wrong"):
        out[v] = sum(r["verdict"] == v for r in rows) / n if n else None
    out["right_minus_wrong"] = (out["right"] - out["wrong"]) if n else None
    return out


def open_summary(rows: list[dict]) -> dict:
    """Right / abstained / wrong overall and split by whether the question's own pages hold the right choice."""
    right = [r for r in rows if r["verdict"] == "right"]
    answerable = [r for r in rows if r["answerable"]]
    totals = [r["total_s"] for r in rows if r["total_s"] is not None]
    firsts = [r["first_token_s"] for r in rows if r["first_token_s"] is not None]
    return {
        "all": _shares(rows),
        "answerable": _shares(answerable),
        "not_answerable": _shares([r for r in rows if not r["answerable"]]),
        "in_corpus": _shares([r for r in rows if r["in_corpus"]]),
        "not_in_corpus": _shares([r for r in rows if not r["in_corpus"]]),
        "right_quoting_answer": sum(r["quotes_answer"] for r in right) / len(right) if right else None,
        "answer_in_front": sum(r["in_front"] for r in answerable) / len(answerable) if answerable else None,
        "answer_in_context": sum(r["in_context"] for r in answerable) / len(answerable) if answerable else None,
        "first_token_p50_s": statistics.median(firsts) if firsts else None,
        "total_p50_s": statistics.median(totals) if totals else None,
        "total_p95_s": percentile(totals, 0.95) if totals else None,
        "tradeoff": tradeoff(rows),
        "withheld": withheld_by_check(rows),
    }


def withheld_by_check(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per check that withheld an answer: how many of the drafts it withheld named the right choice, and how many did not."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["verdict"] == "abstained":
            c = out.setdefault(r.get("abstain_check") or "other", {"right_draft": 0, "wrong_draft": 0, "no_draft": 0})
            c["no_draft" if r["draft_verdict"] is None else f"{r['draft_verdict']}_draft"] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["right_draft"]))


def tradeoff(rows: list[dict], thresholds: tuple[float, ...] = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) -> list[dict]:
    """Right, abstained and wrong shares (all questions, those answerable from the pages, the others) at each threshold on the fitted chance."""
    out = []
    for t in thresholds:
        verdicts = [
            (r["answerable"], "abstained" if r["verdict_any_score"] != "abstained" and r["score"] is not None and r["score"] < t else r["verdict_any_score"])
            for r in rows
            if "verdict_any_score" in r
        ]
        if not verdicts:
            return []
        point: dict = {"threshold": t}
        for group, vs in (("", verdicts), ("answerable_", [v for v in verdicts if v[0]]), ("not_answerable_", [v for v in verdicts if not v[0]])):
            for v in ("right", "abstained", "wrong"):
                point[group + v] = sum(x == v for _, x in vs) / len(vs) if vs else None
        out.append(point)
    return out
