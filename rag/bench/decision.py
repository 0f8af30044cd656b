"""``rag bench decision``: fit when an answer stands on recorded RealTime QA runs, and check it on another split.

Reads the ``realtimeqa.json`` reports of ``rag bench realtimeqa --open`` (their rows keep every
answer's signals and whether it named the right choice with no threshold applied), fits the
logistic decision of :mod:`rag.answer.decision` on one split and tests it on the other, both ways, then
(with ``--write``) fits it on all of them and writes ``rag/decision.json``. The threshold follows
from a stated cost (WRONG_COST); the one that maximises right − wrong on the fitting data is
reported beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from ..answer.decision import FEATURES, MODEL_FILE, SIGNALS, feature_values
from ..types import RagError

# An answer stands when its fitted chance p of being right makes answering worth more than abstaining: p − WRONG_COST·(1 − p) > 0,
# so the threshold is WRONG_COST / (1 + WRONG_COST). A wrong answer with an exact citation is the worst thing the product
# can do, an abstention on an answerable question the second worst: one wrong costs one and a half right ones (0.6). This is
# a stated cost, not a fitted knob: right − wrong on the dev sets is flat from 0.50 to 0.64 (48 to 50 of 177 questions), so
# its arg-max there is noise (best_threshold_on_fit records it).
WRONG_COST = 1.5
C = 0.1  # L2 strength: about fifty decided answers a split for ten features, so ten times scikit-learn's default (1.0 fitted each split well and the other not at all)


def load_rows(path: Path) -> list[dict]:
    """The open-answer rows of one report that a decision could take or withhold (answered with no threshold)."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RagError(f"{path}: not a readable realtimeqa.json ({exc})") from exc
    if "metrics" in report and "rows" in report:  # a rag eval report (run with RAG_MIN_ANSWER_SCORE=0)
        return [eval_row(r, path.parent.name) for r in report["rows"]]
    rows = (report.get("open") or {}).get("rows")
    if rows is None:
        raise RagError(f"{path}: no open answers in it (run rag bench realtimeqa --open, or rag eval)")
    return [dict(r, split=path.parent.name) for r in rows]


def eval_row(r: dict, split: str) -> dict:
    """A ``rag eval`` row as a decision example: right when it answers an answerable question with every key fact, wrong when
    it answers one without them or answers an unanswerable one."""
    if r["abstained"]:
        verdict = "abstained"
    else:
        verdict = "right" if r["answerable"] and (r["key_fact_recall"] is None or r["key_fact_recall"] >= 1.0) else "wrong"
    return {"id": r["id"], "answerable": r["answerable"], "verdict_any_score": verdict, "signals": r.get("signals") or {}, "split": split}


def decided(rows: list[dict]) -> list[dict]:
    """Rows whose answer passed every hard check: the decision takes or withholds them."""
    return [r for r in rows if r["verdict_any_score"] in ("right", "wrong") and r.get("signals")]


def fit(rows: list[dict], features: tuple[str, ...] = FEATURES) -> dict:
    """Fit the logistic decision on ``rows`` (all of a split's rows: the threshold counts per question) over the named signals."""
    from sklearn.linear_model import LogisticRegression

    train = decided(rows)
    if len({r["verdict_any_score"] for r in train}) < 2:
        raise RagError("the fitting runs need both right and wrong answers")
    raw = np.array([[np.nan if v is None else v for v in feature_values(r["signals"], features)] for r in train], dtype=float)
    with warnings.catch_warnings():  # a signal no answer has (no token probabilities at all) is a column of NaN: its mean is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(raw, axis=0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    x = np.where(np.isnan(raw), mean, raw)
    scale = x.std(axis=0)
    scale = np.where(scale < 1e-9, 1.0, scale)
    y = np.array([r["verdict_any_score"] == "right" for r in train])
    model = LogisticRegression(C=C, max_iter=1000).fit((x - mean) / scale, y)
    d = {
        "features": list(features),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "coef": [round(float(v), 6) for v in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
    }
    d["threshold"] = round(WRONG_COST / (1 + WRONG_COST), 4)
    d["best_threshold_on_fit"] = best_threshold(probabilities(d, rows), rows)
    return d


def probabilities(d: dict, rows: list[dict]) -> list[float | None]:
    """Each row's fitted probability (None: the hard checks withheld it, no decision to make)."""
    from ..answer.decision import Decision

    model = Decision(tuple(d["features"]), tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]), d["intercept"], d.get("threshold", 0.5))
    return [model.probability(r["signals"]) if r["verdict_any_score"] in ("right", "wrong") and r.get("signals") else None for r in rows]


def outcome(probs: list[float | None], rows: list[dict], threshold: float) -> dict:
    """Right, abstained and wrong per question, and right − wrong, when answers need ``threshold``."""
    n = len(rows)
    right = sum(p is not None and p >= threshold and r["verdict_any_score"] == "right" for p, r in zip(probs, rows))
    wrong = sum(p is not None and p >= threshold and r["verdict_any_score"] == "wrong" for p, r in zip(probs, rows))
    ans = [r for r in rows if r["answerable"]]
    ans_right = sum(p is not None and p >= threshold and r["verdict_any_score"] == "right" for p, r in zip(probs, rows) if r["answerable"])
    return {
        "n": n,
        "right": right / n,
        "wrong": wrong / n,
        "abstained": 1 - (right + wrong) / n,
        "right_minus_wrong": (right - wrong) / n,
        "answerable_right": ans_right / len(ans) if ans else None,
    }


def best_threshold(probs: list[float | None], rows: list[dict]) -> float:
    """The probability an answer needs that maximises right − wrong on ``rows`` (the higher one on a tie)."""
    candidates = sorted({round(p, 4) for p in probs if p is not None} | {1.0})
    best = max(candidates, key=lambda t: (outcome(probs, rows, t)["right_minus_wrong"], t))
    return float(best)


def risk_coverage(probs: list[float | None], rows: list[dict], points: int = 10) -> list[dict]:
    """Answers taken most probable first: the share of questions answered (coverage) and the share of those wrong (risk)."""
    taken = sorted(((p, r["verdict_any_score"] == "wrong") for p, r in zip(probs, rows) if p is not None), reverse=True)
    out = []
    for k in sorted({max(1, round(len(taken) * i / points)) for i in range(1, points + 1)}) if taken else []:
        wrong = sum(w for _, w in taken[:k])
        out.append({"coverage": k / len(rows), "risk": wrong / k, "threshold": taken[k - 1][0]})
    return out


def hand_weighted(rows: list[dict], threshold: float = 0.95) -> dict:
    """The decision this replaces (aboutness + half the token confidence − the old-report penalty ≥ 0.95), on the same rows."""
    probs = []
    for r in rows:
        s = r.get("signals") or {}
        if r["verdict_any_score"] not in ("right", "wrong") or "about" not in s:
            probs.append(None)
            continue
        old = s.get("report_days", 0.0) > 365
        probs.append(s["about"] + 0.5 * s.get("confidence", 1.0) - (0.2 if old else 0.0))
    return outcome(probs, rows, threshold)


def report(splits: dict[str, list[dict]], features: tuple[str, ...] = FEATURES) -> tuple[dict, str]:
    """Fit on each split and test on every other, against fitting on the test split itself and the hand-weighted sum."""
    result: dict = {"splits": {}, "cross": [], "features": list(features)}
    fits = {name: fit(rows, features) for name, rows in splits.items()}
    lines = [
        "| fitted on | tested on | threshold | right | abstained | wrong | right − wrong | answerable right | share of the gain of fitting on the test split |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for test, rows in splits.items():
        own = outcome(probabilities(fits[test], rows), rows, fits[test]["threshold"])
        base = hand_weighted(rows)
        result["splits"][test] = {"hand_weighted": base, "fitted_on_itself": own}
        lines.append(_line("hand-weighted sum", test, 0.95, base, None))
        lines.append(_line(test, test, fits[test]["threshold"], own, None))
        for train in splits:
            if train == test:
                continue
            probs = probabilities(fits[train], rows)
            got = outcome(probs, rows, fits[train]["threshold"])
            gain_own = own["right_minus_wrong"] - base["right_minus_wrong"]
            share = (got["right_minus_wrong"] - base["right_minus_wrong"]) / gain_own if gain_own > 1e-9 else None
            result["cross"].append({"fitted_on": train, "tested_on": test, **got, "gain_share": share, "risk_coverage": risk_coverage(probs, rows)})
            lines.append(_line(train, test, fits[train]["threshold"], got, share))
        if len(splits) > 2:  # fitted on every other split together: the shipped decision's case on data it has not seen
            rest = fit([r for name, other in splits.items() if name != test for r in other], features)
            got = outcome(probabilities(rest, rows), rows, rest["threshold"])
            result["cross"].append({"fitted_on": "all others", "tested_on": test, **got})
            lines.append(_line("all the others", test, rest["threshold"], got, None))
    every = fit([r for rows in splits.values() for r in rows], features)
    for test, rows in splits.items():
        got = outcome(probabilities(every, rows), rows, every["threshold"])
        result["splits"][test]["fitted_on_all"] = got
        lines.append(_line("all (shipped)", test, every["threshold"], got, None))
    return result, "\n".join(lines) + "\n"


def _line(train: str, test: str, t: float, o: dict, share: float | None) -> str:
    ar = "n/a" if o["answerable_right"] is None else f"{o['answerable_right']:.2f}"
    sh = "" if share is None else f"{share:.0%}"
    return f"| {train} | {test} | {t:.2f} | {o['right']:.2f} | {o['abstained']:.2f} | {o['wrong']:.2f} | {o['right_minus_wrong']:+.2f} | {ar} | {sh} |"


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``decision`` under ``rag bench``."""
    p = bench_subparsers.add_parser(
        "decision",
        help="fit when an answer stands on recorded RealTime QA runs: each split against the others, then (--write) on all",
    )
    p.add_argument(
        "reports",
        nargs="+",
        type=Path,
        help="realtimeqa.json files of rag bench realtimeqa --open, or report.json files of rag eval run with RAG_MIN_ANSWER_SCORE=0, "
        "one per split (at least two)",
    )
    p.add_argument("--write", action="store_true", help=f"fit on all of them and write {MODEL_FILE.name} into the package")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument(
        "--features",
        type=lambda v: tuple(f.strip() for f in v.split(",") if f.strip()),
        default=FEATURES,
        help=f"comma-separated signals to fit on (default: {','.join(FEATURES)}; known: {','.join(SIGNALS)})",
    )


def run(args: argparse.Namespace) -> int:
    """``rag bench decision``."""
    if len(args.reports) < 2:
        raise RagError("give at least two realtimeqa.json reports: the decision is fitted on one split and tested on another")
    if unknown := [f for f in args.features if f not in SIGNALS]:
        raise RagError(f"--features: unknown signal {', '.join(unknown)} (known: {', '.join(SIGNALS)})")
    splits = {f"{p.parent.name}": load_rows(p) for p in args.reports}
    result, md = report(splits, args.features)
    if args.write:
        every = [r for rows in splits.values() for r in rows]
        d = fit(every, args.features)
        d["fitted_on"] = {name: len(decided(rows)) for name, rows in splits.items()}
        d["command"] = "rag bench decision " + " ".join(str(p) for p in args.reports) + f" --features {','.join(args.features)} --write"
        MODEL_FILE.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
        result["written"] = d
        print(f"wrote {MODEL_FILE} (threshold {d['threshold']:.2f})", file=sys.stderr)
    print(json.dumps(result, indent=1) if args.json else md, end="" if not args.json else "\n")
    return 0
