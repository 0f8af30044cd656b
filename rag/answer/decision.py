"""When a checked answer stands: a small logistic model over the signals the checks record, fitted on real news.

Every hard check (the claim is stated, the short answer is the kind asked, the quotes are from the
year asked, the report is recent for a "this week" question) has passed before this is asked; what
is left is how likely the answer is right, from what the pipeline measured on the way:

- ``about_words``, ``about_context``, ``about_names``: how much of what the question asks the lead's
  quotes, their passages and titles speak of (:func:`rag.answer.verify.about_question`);
- ``confidence``, ``first_p``: the model's token probabilities for its short answer;
- ``lead_score``: how well the lead's quote matches the model's sentence;
- ``others_stating``: other articles among the passages that state the same short answer (capped at 2);
- ``report_years``: how much older than the question its newest quoted report is (0 to 5 years);
- ``lead_rank``: where the lead's quote ranks among the evidence sentences (log scale);
- ``replaced``: the model's sentence failed and a quote stating its answer stands instead.

``SIGNALS`` names every signal it can read, the candidates' ranking among them (``pick_share``,
``cand_margin``: :mod:`rag.answer.candidates`, when it runs); ``decision.json`` says which it was fitted on
(``FEATURES`` by default, ``rag bench decision --features`` for another set).

The coefficients live in ``decision.json`` beside this file, a few numbers with the command that
refits them (``rag bench decision``): fitted on recorded RealTime QA runs, scaled features, L2-
regularised. A signal a backend does not give (no token probabilities from an endpoint) is
read as the fitting data's mean, so it moves the probability neither way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

MODEL_FILE = Path(__file__).with_name("decision.json")


def _report_years(s: dict[str, float]) -> float:
    days = s.get("report_days")
    return 0.0 if days is None else min(max(days, 0.0) / 365.0, 5.0)


def _lead_rank(s: dict[str, float]) -> float | None:
    rank = s.get("lead_rank")
    return None if rank is None else math.log1p(rank)


# Every signal the decision can read, by name, from an answer's recorded signals (None: the backend gave no such signal)
SIGNALS = {
    "about_words": lambda s: s.get("about_words"),
    "about_context": lambda s: s.get("about_context"),
    "about_names": lambda s: s.get("about_names"),
    "confidence": lambda s: s.get("confidence"),
    "first_p": lambda s: s.get("first_p"),
    "lead_score": lambda s: s.get("lead_score"),
    "others_stating": lambda s: min(s.get("stating_others", 0.0), 2.0),
    "report_years": _report_years,
    "lead_rank": _lead_rank,
    "replaced": lambda s: s.get("replaced", 0.0),
    "cand_share": lambda s: s.get("cand_share"),
    "cand_margin": lambda s: s.get("cand_margin"),
    "pick_share": lambda s: s.get("pick_share"),
    "pick_agrees": lambda s: s.get("pick_agrees"),
}
# the signals a refit uses unless told otherwise (rag bench decision --features)
FEATURES = (
    "about_words",
    "about_context",
    "about_names",
    "confidence",
    "first_p",
    "lead_score",
    "others_stating",
    "report_years",
    "lead_rank",
    "replaced",
)


def feature_values(signals: dict[str, float], features: tuple[str, ...] = FEATURES) -> list[float | None]:
    """The decision's inputs from an answer's recorded signals (None: the backend gave no such signal)."""
    return [SIGNALS[f](signals) for f in features]


@dataclass(frozen=True)
class Decision:
    """A fitted logistic model: scaled features, coefficients, and the probability an answer needs."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float

    def probability(self, signals: dict[str, float]) -> float:
        """The fitted probability that an answer with these signals names the right answer."""
        z = self.intercept
        for x, m, s, c in zip(feature_values(signals, self.features), self.mean, self.scale, self.coef, strict=True):
            if x is not None:
                z += c * (x - m) / s
        return 1.0 / (1.0 + math.exp(-z))


@lru_cache(maxsize=1)
def fitted() -> Decision:
    """The shipped decision (``decision.json``)."""
    d = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    if unknown := [f for f in d["features"] if f not in SIGNALS]:
        raise ValueError(f"{MODEL_FILE.name} reads signals this version does not record ({', '.join(unknown)}); refit it with `{d.get('command', 'rag bench decision')}`")
    return Decision(tuple(d["features"]), tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]), float(d["intercept"]), float(d["threshold"]))


def threshold(configured: float) -> float:
    """The probability an answer needs: ``configured`` (Settings.min_answer_score), or the fitted one when it is below 0."""
    return fitted().threshold if configured < 0 else configured
