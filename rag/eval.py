"""Evaluate retrieval, answers, citations, abstention and latency on a QA set.

The QA format is one JSON object a line: ``question``, ``answerable``, ``gold_docs``,
``key_facts`` (groups of alternative strings), ``reference`` (optional), ``id`` (optional).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .answer import prompts
from .measure import peak_rss_mb, percentile
from .types import Answer, RagError

if TYPE_CHECKING:
    from .answer.llm import ChatModel
    from .api import RAG


@dataclass
class Question:
    id: str
    question: str
    answerable: bool = True
    gold_docs: list[str] = field(default_factory=list)
    key_facts: list[list[str]] = field(default_factory=list)
    reference: str | None = None


@dataclass
class Row:
    """One question's result and its metrics."""

    id: str
    question: str
    answerable: bool
    gold_docs: list[str]
    abstained: bool
    answer: str
    citations: list[dict]
    retrieved_docs: list[str]
    key_fact_recall: float | None
    token_f1: float | None
    citation_precision: float | None
    cited: bool
    hit_rank: int | None  # rank of the first retrieved passage from a gold document
    timings: dict[str, float]
    alce_recall: float | None = None
    alce_precision: float | None = None
    # the answer's shape (answered answerable questions only; see answer_shape)
    n_sentences: int | None = None
    repeated: int | None = None
    off_question: int | None = None
    failed_claims: int | None = None  # sentences the claim checks failed: shown flagged, or dropped from the draft
    clean: bool | None = None
    abstain_check: str | None = None  # the check that withheld the answer (rag.answer.CHECKS)
    abstain_reason: str | None = None  # ... and what it found, in words
    short_answer: str | None = None
    signals: dict[str, float] = field(default_factory=dict)  # what the decision read (rag.answer.decision)


@dataclass
class Report:
    backend: str
    top_k: int
    judge: str
    n_questions: int
    metrics: dict[str, float | None]
    latency: dict[str, dict[str, float]]
    peak_rss_mb: float
    rows: list[Row]
    abstentions: dict[str, dict[str, int]] = field(default_factory=dict)  # check -> {"answerable": n, "not_answerable": n}

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"# Evaluation report ({self.backend} backend, top-k {self.top_k}, {self.n_questions} questions)",
            "",
            f"Citation recall and precision per sentence (ALCE) judged by: {self.judge}.",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {'n/a' if v is None else f'{v:.3f}'} |" for k, v in self.metrics.items()]
        lines += ["", "| stage | median s | p95 s |", "|---|---|---|"]
        lines += [f"| {k} | {v['p50']:.3f} | {v['p95']:.3f} |" for k, v in self.latency.items()]
        lines += ["", f"Peak memory: {self.peak_rss_mb:.0f} MB", ""]
        if self.abstentions:
            lines += ["## Why answers were withheld", "", "| check | answerable questions | not answerable |", "|---|---|---|"]
            lines += [f"| {k} | {v['answerable']} | {v['not_answerable']} |" for k, v in self.abstentions.items()]
            lines += ["", "| id | check | reason |", "|---|---|---|"]
            lines += [f"| {r.id} | {r.abstain_check or ''} | {(r.abstain_reason or '').replace('|', '/')} |" for r in self.rows if r.abstained]
            lines += [""]
        lines += ["## Per question", ""]
        lines += [
            "| id | abstained | key facts | cit. precision | hit rank | sentences | repeated | off question | failed claims | clean | answer |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            kf = "" if r.key_fact_recall is None else f"{r.key_fact_recall:.2f}"
            cp = "" if r.citation_precision is None else f"{r.citation_precision:.2f}"
            cites = "; ".join(f"[{c['n']}] {c['source_file']}" for c in r.citations)
            ans = r.answer.replace("|", "\\|").replace("\n", " ")
            shape = " | ".join("" if v is None else str(v) for v in (r.n_sentences, r.repeated, r.off_question, r.failed_claims, r.clean))
            lines.append(f"| {r.id} | {r.abstained} | {kf} | {cp} | {r.hit_rank or ''} | {shape} | {ans} <br> {cites} |")
        return "\n".join(lines) + "\n"


def load_questions(path: str | Path) -> list[Question]:
    """Read a QA set; raises RagError naming the line of any malformed entry."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise RagError(f"cannot read QA set {path}: {exc.strerror}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(
                Question(
                    id=str(d.get("id", n)),
                    question=d["question"],
                    answerable=bool(d.get("answerable", True)),
                    gold_docs=list(d.get("gold_docs", [])),
                    key_facts=[list(g) if isinstance(g, list) else [g] for g in d.get("key_facts", [])],
                    reference=d.get("reference"),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RagError(f"{path} line {n}: not a QA entry ({exc})") from exc
    if not out:
        raise RagError(f"{path}: no questions")
    return out


def key_fact_recall(answer: str, groups: list[list[str]]) -> float | None:
    """Share of key-fact groups of which some alternative occurs in the answer (case-insensitive)."""
    if not groups:
        return None
    low = answer.lower()
    return sum(any(alt.lower() in low for alt in g) for g in groups) / len(groups)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between an answer and a reference."""
    norm = lambda s: re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", " ", s.lower())).split()  # noqa: E731
    p, r = norm(re.sub(r"\[\d+\]", "", prediction)), norm(reference)
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r or not common:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)



# ---------------------------------------------------------------- support judges
class Judge(Protocol):
    """Decides whether a premise (cited passages) entails a hypothesis (an answer sentence)."""

    name: str

    def entails(self, premise: str, hypothesis: str) -> bool: ...


class LLMJudge:
    """Asks an LLM backend for entailment (the default: no NLI model ships in a package here)."""

    def __init__(self, llm: ChatModel, label: str):
        self.llm = llm
        self.name = f"llm:{label}"
        self._cache: dict[tuple[str, str], bool] = {}

    def entails(self, premise: str, hypothesis: str) -> bool:
        key = (premise, hypothesis)
        if key not in self._cache:
            reply = "".join(self.llm.stream(prompts.entailment_messages(premise, hypothesis), 3, 0.0))
            self._cache[key] = reply.strip().lower().startswith("yes")
        return self._cache[key]


class OverlapJudge:
    """Fast judge without a model: the attribution score (word coverage and embedding similarity)."""

    name = "overlap"

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def entails(self, premise: str, hypothesis: str) -> bool:
        from .answer.verify import support_score
        from .index import embedding

        a, b = embedding.embed([hypothesis, premise])
        return support_score(hypothesis, premise, float(a @ b)) >= self.threshold


def alce_scores(answer: Answer, judge: Judge) -> tuple[float | None, float | None]:
    """ALCE citation recall and precision of one answer (Gao et al. 2023).

    A sentence's recall is 1 when its cited quotes together entail it. A citation is precise
    unless the sentence is unsupported, or the citation is irrelevant: it alone does not entail
    the sentence while the other citations still do.
    """
    if answer.abstained or not answer.sentences:
        return None, None
    quote = {c.n: c.quote for c in answer.citations}
    recalls, precise, total = [], 0, 0
    for s in answer.sentences:
        cites = [n for n in s.citations if n in quote]
        joint = bool(cites) and judge.entails(" ".join(quote[n] for n in cites), s.text)
        recalls.append(float(joint))
        total += len(cites)
        if not joint:
            continue
        for n in cites:
            alone = len(cites) == 1 or judge.entails(quote[n], s.text)
            rest = [m for m in cites if m != n]
            irrelevant = not alone and bool(rest) and judge.entails(" ".join(quote[m] for m in rest), s.text)
            precise += not irrelevant
    return sum(recalls) / len(recalls), (precise / total if total else None)


def answer_shape(q: Question, a: Answer) -> dict:
    """What a reader would object to in one answer, sentence by sentence.

    - repeated: a sentence whose content words are mostly (70%) in an earlier sentence of the answer;
    - off the question: a sentence holding no key fact whose content words are mostly (75%) neither
      the question's nor the reference answer's, or one that cites only articles from other years
      than the question names without naming those years itself;
    - failed claims: sentences the claim checks failed (shown flagged, or dropped from the draft);
    - clean: every key fact, nothing repeated or off the question, every shown sentence supported.
    """
    from .text import content_words, years

    sents = [s.text for s in a.sentences]
    repeated = 0
    for i, s in enumerate(sents):
        w = content_words(s)
        repeated += bool(w) and any(len(w & content_words(t)) / len(w) >= 0.7 for t in sents[:i])
    topic = content_words(q.question + " " + (q.reference or ""))
    facts = [alt.lower() for g in q.key_facts for alt in g]
    asked = {int(y) for y in years(q.question)}
    dates = {c.n: c.date for c in a.citations}
    off = 0
    for s in a.sentences:
        w = content_words(s.text)
        if any(f in s.text.lower() for f in facts):
            continue
        cited_years = {int(dates[n][:4]) for n in s.citations if dates.get(n)}
        elsewhere = asked and cited_years and not {int(y) for y in years(s.text)} & asked and min(cited_years) > max(asked) + 1
        off += bool(elsewhere) or (bool(w) and len(w & topic) / len(w) < 0.25)
    shown_failed = sum(not s.supported for s in a.sentences)
    dropped_failed = sum(d.reason.startswith("not stated") or "not stated by the sources" in d.reason for d in a.dropped)
    kf = key_fact_recall(a.text, q.key_facts)
    return {
        "n_sentences": len(sents),
        "repeated": repeated,
        "off_question": off,
        "failed_claims": shown_failed + dropped_failed,
        "clean": (kf is None or kf == 1.0) and not repeated and not off and not shown_failed,
    }


def score_row(q: Question, a: Answer, judge: Judge | None = None) -> Row:
    retrieved = []
    for p in a.passages:
        retrieved.append(p.doc.id)
        retrieved.extend(p.also_reported_by)
    hit_rank = next((p.n for p in a.passages if q.gold_docs and ({p.doc.id, *p.also_reported_by} & set(q.gold_docs))), None)
    cites = [c.to_dict() for c in a.citations]
    ok = q.answerable and not a.abstained
    alce = alce_scores(a, judge) if judge and q.answerable else (None, None)
    shape = answer_shape(q, a) if ok else {}
    return Row(
        id=q.id,
        question=q.question,
        answerable=q.answerable,
        gold_docs=q.gold_docs,
        abstained=a.abstained,
        answer=a.text,
        citations=cites,
        retrieved_docs=retrieved,
        key_fact_recall=(key_fact_recall(a.text, q.key_facts) if not a.abstained else 0.0) if q.answerable and q.key_facts else None,
        token_f1=token_f1(a.text, q.reference) if ok and q.reference else (0.0 if q.answerable and q.reference else None),
        citation_precision=(sum(c["source_file"] in q.gold_docs for c in cites) / len(cites)) if cites and q.gold_docs else None,
        cited=bool(cites),
        hit_rank=hit_rank,
        timings=dict(a.timings),  # the stages that ran (Answer.timings reads as that mapping)
        alce_recall=alce[0],
        alce_precision=alce[1],
        abstain_check=(a.abstain_check or "other") if a.abstained else None,
        abstain_reason=a.abstain_reason if a.abstained else None,
        short_answer=a.short_answer,
        signals=dict(a.signals),
        **shape,
    )


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def rank_metrics(ranks: list[int | None], ks: tuple[int, ...] = (1, 3, 5), mrr_at: int | None = None) -> dict[str, float | None]:
    """Hits@k for each k and the mean reciprocal rank (cut at ``mrr_at`` when given) of 1-based ranks (None: not found)."""
    key = f"mrr@{mrr_at}" if mrr_at else "mrr"
    if not ranks:
        return {**{f"hits@{k}": None for k in ks}, key: None}
    n = len(ranks)
    out: dict[str, float | None] = {f"hits@{k}": sum(r is not None and r <= k for r in ranks) / n for k in ks}
    out[key] = sum(1.0 / r for r in ranks if r is not None and (mrr_at is None or r <= mrr_at)) / n
    return out


def summarise(rows: list[Row]) -> dict[str, float | None]:
    ans = [r for r in rows if r.answerable]
    gold = [r for r in ans if r.gold_docs]
    unans = [r for r in rows if not r.answerable]
    abst = [r for r in rows if r.abstained]
    all_cites = [c for r in ans for c in r.citations]
    m: dict[str, float | None] = {}
    m.update(rank_metrics([r.hit_rank for r in gold]))
    m["key_fact_recall"] = _mean([r.key_fact_recall for r in ans])
    m["token_f1"] = _mean([r.token_f1 for r in ans])
    m["citation_precision"] = sum(c["source_file"] in r.gold_docs for r in ans for c in r.citations) / len(all_cites) if all_cites else None
    m["cited"] = _mean([float(r.cited) for r in ans]) if ans else None
    m["alce_citation_recall"] = _mean([r.alce_recall for r in ans])
    m["alce_citation_precision"] = _mean([r.alce_precision for r in ans])
    answered = [r for r in ans if r.n_sentences is not None]
    m["sentences_per_answer"] = _mean([float(r.n_sentences) for r in answered])
    m["repeated_sentences"] = float(sum(r.repeated for r in answered)) if answered else None
    m["off_question_sentences"] = float(sum(r.off_question for r in answered)) if answered else None
    m["failed_claims"] = float(sum(r.failed_claims for r in answered)) if answered else None
    # a question abstained on wrongly is not a clean answer either
    m["clean_answers"] = _mean([float(bool(r.clean)) for r in ans]) if ans else None
    m["abstention_precision"] = (sum(not r.answerable for r in abst) / len(abst)) if abst else (1.0 if unans else None)
    m["abstention_recall"] = _mean([float(r.abstained) for r in unans]) if unans else None
    m["answered_when_answerable"] = _mean([float(not r.abstained) for r in ans]) if ans else None
    return m


def evaluate(rag: RAG, questions: list[Question | dict], judge: Judge | None = None, progress: bool = False, **overrides: object) -> Report:
    """Ask every question through ``rag`` and score the answers. Overrides are Settings fields."""
    from tqdm import tqdm

    settings = rag.settings.with_(**overrides)
    questions = [q if isinstance(q, Question) else Question(**{k: v for k, v in q.items() if k in Question.__dataclass_fields__}) for q in questions]
    answers = [rag.ask(q.question, **overrides) for q in tqdm(questions, desc="evaluating", unit="q", disable=not progress)]
    return score_answers(questions, answers, judge, backend=settings.llm, top_k=settings.top_k)


def score_answers(questions: list[Question], answers: list[Answer], judge: Judge | None = None, backend: str = "", top_k: int = 0) -> Report:
    """Score answers already given (one per question, same order) into a Report."""
    rows = [score_row(q, a, judge) for q, a in zip(questions, answers, strict=True)]
    stages = sorted({k for r in rows for k in r.timings})
    latency = {
        s: {"p50": statistics.median(v), "p95": percentile(v, 0.95)} for s in stages if (v := [r.timings[s] for r in rows if s in r.timings])
    }
    peak = peak_rss_mb()
    return Report(backend, top_k, judge.name if judge else "none", len(rows), summarise(rows), latency, peak, rows, abstention_counts(rows))


def abstention_counts(rows: list[Row]) -> dict[str, dict[str, int]]:
    """How many abstentions each check caused, on answerable questions (withheld right answers, at worst) and the others; most first."""
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.abstained:
            c = counts.setdefault(r.abstain_check or "other", {"answerable": 0, "not_answerable": 0})
            c["answerable" if r.answerable else "not_answerable"] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1]["answerable"], -kv[1]["not_answerable"], kv[0])))


def write_outputs(report: Report, out: str | Path) -> list[Path]:
    """Write report.md, report.json and report.png (latency and quality chart) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = out / "report.md", out / "report.json", out / "report.png"
    md.write_text(report.markdown(), encoding="utf-8")
    js.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a3, a2) = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [3, 2, 3]})
    counts = ("sentences_per_answer", "repeated_sentences", "off_question_sentences", "failed_claims")
    q = {k: v for k, v in report.metrics.items() if v is not None and k not in counts}
    a1.barh(list(q), list(q.values()), color="#3b7dd8")
    a1.set_xlim(0, 1)
    a1.set_title("quality")
    shape = {k.replace("_", " "): report.metrics[k] or 0 for k in counts if k in report.metrics}
    a3.barh(list(shape), list(shape.values()), color="#8a5cc7")
    a3.set_title("answer shape (per answer / in all)")
    lat = report.latency
    a2.barh(list(lat), [v["p50"] for v in lat.values()], color="#e08a2c", label="median")
    a2.barh(list(lat), [v["p95"] - v["p50"] for v in lat.values()], left=[v["p50"] for v in lat.values()], color="#f3c89a", label="to p95")
    a2.set_title("latency per stage (s)")
    a2.legend()
    fig.suptitle(f"{report.backend} backend, {report.n_questions} questions")
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return [md, js, png]


def check_minimums(report: Report, minimums: dict[str, float]) -> list[str]:
    """The metrics that fall short of the given minimums, as readable lines."""
    fails = []
    for k, lo in minimums.items():
        if k not in report.metrics:
            raise RagError(f"unknown metric {k!r}; known: {', '.join(report.metrics)}")
        v = report.metrics[k]
        if v is None or v < lo:
            fails.append(f"{k} = {'n/a' if v is None else f'{v:.3f}'} is below the minimum {lo}")
    return fails
