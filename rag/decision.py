"""When a checked answer stands: a small logistic model over the signals the checks record, fitted on real news.

Every hard check (the claim is stated, the short answer is the kind asked, the quotes are from the
year asked, the report is recent for a "this week" question) has passed before this is asked; what
is left is how likely the answer is right, from what the pipeline measured on the way:

- ``about_words``, ``about_context``, ``about_names``: how much of what the question asks the lead's
  quotes, their passages and titles speak of (:func:`rag.verify.about_question`);
- ``confidence``, ``first_p``: the model's token probabilities for its short answer;
- ``lead_score``: how well the lead's quote matches the model's sentence;
- ``others_stating``: other articles among the passages that state the same short answer (capped at 2);
- ``report_years``: how much older than the question its newest quoted report is (0 to 5 years);
- ``lead_rank``: where the lead's quote ranks among the evidence sentences (log scale);
- ``replaced``: the model's sentence failed and a quote stating its answer stands instead.

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


def feature_values(signals: dict[str, float]) -> list[float | None]:
    """The decision's inputs from an answer's recorded signals (None: the backend gave no such signal)."""
    days = signals.get("report_days")
    rank = signals.get("lead_rank")
    return [
        signals.get("about_words"),
        signals.get("about_context"),
        signals.get("about_names"),
        signals.get("confidence"),
        signals.get("first_p"),
        signals.get("lead_score"),
        min(signals.get("stating_others", 0.0), 2.0),
        0.0 if days is None else min(max(days, 0.0) / 365.0, 5.0),
        None if rank is None else math.log1p(rank),
        signals.get("replaced", 0.0),
    ]


@dataclass(frozen=True)
class Decision:
    """A fitted logistic model: scaled features, coefficients, and the probability an answer needs."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float

    def probability(self, signals: dict[str, float]) -> float:
        """The fitted probability that an answer with these signals names the right answer."""
        z = self.intercept
        for x, m, s, c in zip(feature_values(signals), self.mean, self.scale, self.coef, strict=True):
            if x is not None:
                z += c * (x - m) / s
        return 1.0 / (1.0 + math.exp(-z))


@lru_cache(maxsize=1)
def fitted() -> Decision:
    """The shipped decision (``decision.json``)."""
    d = json.loads(MODEL_FILE.read_text(encoding="utf-8"))
    if tuple(d["features"]) != FEATURES:
        raise ValueError(f"{MODEL_FILE.name} was fitted on other features; refit it with `{d.get('command', 'rag bench decision')}`")
    return Decision(tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]), float(d["intercept"]), float(d["threshold"]))


def threshold(configured: float) -> float:
    """The probability an answer needs: ``configured`` (Settings.min_answer_score), or the fitted one when it is below 0."""
    return fitted().threshold if configured < 0 else configured
