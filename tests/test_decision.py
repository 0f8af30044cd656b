"""The fitted decision: the shipped numbers load, a refit reproduces scikit-learn's probabilities, and its threshold follows the stated cost."""

from __future__ import annotations

import json
import math
import random

import pytest

from rag.answer import decision
from rag.bench import decision as fitting
from rag.settings import Settings


def rows(n: int, seed: int) -> list[dict]:
    """Answers whose aboutness tells right from wrong (with noise), as the bench records them, and some withheld by a check."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        right = rnd.random() < 0.5
        about = min(1.0, max(0.0, rnd.gauss(0.7 if right else 0.4, 0.15)))
        signals = {"about_words": about, "about_context": about, "about_names": 1.0, "confidence": rnd.random(), "lead_score": 0.8, "lead_rank": 1.0}
        out.append({"id": str(i), "answerable": True, "verdict_any_score": "right" if right else "wrong", "signals": signals})
    out += [{"id": f"w{i}", "answerable": False, "verdict_any_score": "abstained", "signals": {}} for i in range(10)]
    return out


def test_the_shipped_decision_loads_and_ranks_stronger_evidence_higher():
    model = decision.fitted()
    weak = {"about_words": 0.1, "about_context": 0.2, "about_names": 0.5, "confidence": 0.3, "first_p": 0.3, "lead_score": 0.6}
    strong = {"about_words": 0.9, "about_context": 0.9, "about_names": 1.0, "confidence": 0.95, "first_p": 0.95, "lead_score": 1.0}
    assert 0.0 < model.probability(weak) < model.probability(strong) < 1.0
    assert 0.0 < decision.threshold(Settings().min_answer_score) < 1.0  # the default reads the fitted threshold
    assert decision.threshold(0.3) == 0.3
    shipped = json.loads(decision.MODEL_FILE.read_text())
    assert shipped["features"] == list(decision.FEATURES) and "rag bench decision" in shipped["command"]


def test_a_refit_gives_scikit_learns_probabilities_and_a_threshold_that_pays():
    from sklearn.linear_model import LogisticRegression

    train = rows(120, 1)
    d = fitting.fit(train)
    probs = fitting.probabilities(d, train)
    decided = fitting.decided(train)
    # the same model straight from scikit-learn, on the same scaled features
    x = [[(v if v is not None else m) for v, m in zip(decision.feature_values(r["signals"]), d["mean"], strict=True)] for r in decided]
    scaled = [[(v - m) / s for v, m, s in zip(row, d["mean"], d["scale"], strict=True)] for row in x]
    lr = LogisticRegression(C=fitting.C, max_iter=1000).fit(scaled, [r["verdict_any_score"] == "right" for r in decided])
    ours = [p for p in probs if p is not None]
    assert ours == pytest.approx(list(lr.predict_proba(scaled)[:, 1]), abs=1e-4)
    # the threshold is the stated cost's, and the best one on the fitting rows is recorded beside it: no other does better
    assert d["threshold"] == pytest.approx(fitting.WRONG_COST / (1 + fitting.WRONG_COST), abs=1e-4)
    best = fitting.outcome(probs, train, d["best_threshold_on_fit"])["right_minus_wrong"]
    assert all(fitting.outcome(probs, train, t / 100)["right_minus_wrong"] <= best + 1e-9 for t in range(0, 101))
    # and on answers of the same kind it has not seen, it beats answering everything
    test = rows(120, 2)
    held = fitting.outcome(fitting.probabilities(d, test), test, d["threshold"])
    assert held["right_minus_wrong"] > fitting.outcome(fitting.probabilities(d, test), test, 0.0)["right_minus_wrong"]
    assert not math.isnan(held["right"])


def test_a_refit_on_other_signals_is_read_back_and_an_unknown_signal_is_refused(tmp_path, monkeypatch):
    train = rows(120, 3)
    for r in train:  # a signal only some answers carry (the candidates' ranking, when it ran)
        if r["verdict_any_score"] in ("right", "wrong") and r["id"].endswith(("0", "2", "4")):
            r["signals"]["pick_share"] = 0.9 if r["verdict_any_score"] == "right" else 0.2
    features = (*decision.FEATURES, "pick_share")
    d = fitting.fit(train, features)
    assert d["features"] == list(features) and len(d["coef"]) == len(features)
    file = tmp_path / "decision.json"
    file.write_text(json.dumps(d))
    monkeypatch.setattr(decision, "MODEL_FILE", file)
    decision.fitted.cache_clear()
    try:
        model = decision.fitted()
        base = {"about_words": 0.6, "about_context": 0.6, "about_names": 1.0, "confidence": 0.8, "first_p": 0.8, "lead_score": 0.9}
        assert model.probability({**base, "pick_share": 0.9}) > model.probability({**base, "pick_share": 0.2})
        file.write_text(json.dumps({**d, "features": [*d["features"][:-1], "no_such_signal"]}))
        decision.fitted.cache_clear()
        with pytest.raises(ValueError, match="no_such_signal"):
            decision.fitted()
    finally:
        decision.fitted.cache_clear()


def test_bench_decision_refuses_an_unknown_signal_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "rag.cli", "bench", "decision", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--features", "about_words,bogus"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "unknown signal bogus" in out.stderr and "Traceback" not in out.stderr
