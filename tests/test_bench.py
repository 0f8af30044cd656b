"""`rag bench latency` for real: our pipeline and llama-index's CitationQueryEngine on the small test model."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from rag.bench import add_parser, run
from rag.bench.latency import STAT_KEYS, latency_bench, markdown, write_outputs
from rag.types import RagError

from .conftest import Q2012

QUESTIONS = [Q2012, "Which country helped broker the reconciliation between Hamas and Iran in 2014?"]
SMALL = {"local_model": "smollm", "max_answer_tokens": 48}


@pytest.fixture(scope="module")
def result(rag) -> dict:
    return latency_bench(rag, QUESTIONS, **SMALL)


def test_json_has_every_key_for_both_pipelines(result):
    assert set(STAT_KEYS) | {"peer", "speedup"} <= set(result)
    assert set(STAT_KEYS) <= set(result["peer"])
    assert json.loads(json.dumps(result)) == result
    assert result["n_questions"] == 2 and result["model"].startswith("SmolLM2")


@pytest.mark.parametrize("side", ["ours", "peer"])
def test_figures_are_positive_and_consistent(result, side):
    r = result if side == "ours" else result["peer"]
    assert r["n_first_token"] == 2 and r["n_no_model_call"] == 0
    for name in ("ttft", "total", "prompt_tokens", "generated_tokens"):
        suffix = "_s" if name in ("ttft", "total") else ""
        p50, p95 = r[f"{name}_p50{suffix}"], r[f"{name}_p95{suffix}"]
        assert 0 < p50 <= p95, name
    assert r["ttft_p50_s"] <= r["total_p50_s"] and r["ttft_p95_s"] <= r["total_p95_s"]
    assert r["total_p50_model_s"] == r["total_p50_s"]  # both questions reached the model
    assert r["peak_rss_mb"] > 0 and r["load_s"] >= 0
    for row in r["rows"]:
        assert 0 < row["ttft_s"] <= row["total_s"] and row["prompt_tokens"] > 0 and row["answer"]


def test_speedup_is_their_median_over_ours(result):
    assert result["speedup"] == pytest.approx(result["peer"]["total_p50_s"] / result["total_p50_s"])


def test_table_and_output_files(result, tmp_path):
    md = markdown(result)
    assert md.startswith("| metric | ours | llama-index CitationQueryEngine | ratio ours/theirs |")
    assert "time to first token, median (s)" in md and "peak memory (MB)" in md and "untimed warm-up" in md
    files = write_outputs(result, md, tmp_path)
    assert [f.name for f in files] == ["bench-latency.md", "bench-latency.json", "bench-latency.png"]
    assert json.loads(files[1].read_text())["speedup"] == result["speedup"]
    assert files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_out_of_corpus_question_counts_in_total_time_but_not_first_token(rag):
    r = latency_bench(rag, [Q2012, "What is the capital of Australia?"], peer=False, **SMALL)
    assert r["peer"] is None and r["speedup"] is None
    assert r["n_first_token"] == 1 and r["n_no_model_call"] == 1
    assert r["total_p50_s"] > 0 and r["ttft_p50_s"] == r["ttft_p95_s"]
    assert r["total_p50_model_s"] == next(row["total_s"] for row in r["rows"] if row["called_model"]) > r["total_p50_s"]
    assert "abstained before calling the model" in markdown(r)


def test_missing_questions_file_is_a_clear_error(tmp_path):
    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["bench", "latency", "--questions", str(tmp_path / "nope.jsonl")])
    with pytest.raises(RagError, match="questions file not found"):
        run(args)
    p = subprocess.run(
        [sys.executable, "-m", "rag.cli", "bench", "latency", "--questions", str(tmp_path / "nope.jsonl")], capture_output=True, text=True
    )
    assert p.returncode == 1 and p.stderr.strip().startswith("error: questions file not found") and "Traceback" not in p.stderr


# ---------------------------------------------------------------- rag bench scale
def test_bench_scale_reports_exact_and_approximate_search_and_bm25_at_each_size(seed_index, tmp_path):
    from .test_cli import rag_cmd

    args = ["bench", "scale", "--index", str(seed_index), "--sizes", "2000,8000", "--queries", "10", "--qdrant-max", "2000"]
    p = rag_cmd(*args, "--out", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(p.stdout)["rows"]
    assert [r["passages"] for r in rows] == [2000, 8000]
    for r in rows:
        assert 0 < r["flat_p50_ms"] <= r["flat_p95_ms"] and 0 < r["bm25_p50_ms"] <= r["bm25_p95_ms"]
        assert 0.5 <= r["ivf_recall@10"] <= 1 and r["ivf_nprobe"] <= r["ivf_nlist"] and r["ivf_add100_ms"] > 0
    assert rows[1]["flat_mb"] > rows[0]["flat_mb"]  # four times the vectors
    assert rows[0]["qdrant_p50_ms"] > 0 and "qdrant_p50_ms" not in rows[1]  # embedded Qdrant only up to --qdrant-max
    assert "| 8,000 |" in (tmp_path / "scale.md").read_text()
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"
    p = rag_cmd("bench", "scale", "--index", str(seed_index), "--sizes", "ten")
    assert p.returncode != 0 and "--sizes" in p.stderr and "Traceback" not in p.stderr
