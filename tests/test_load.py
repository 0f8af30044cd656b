"""A bounded load on 127.0.0.1 (Python API, UI queue, rag serve): every request is answered with its own answer or refused as busy."""

from __future__ import annotations

from rag.bench.load import FALLBACK_QUESTIONS, load_bench


def test_load_through_the_api_and_the_ui_queue_loses_nothing(rag):
    result = load_bench(rag, FALLBACK_QUESTIONS, requests=16, concurrency=8, ui=True, serve=True)
    for path in ("api", "ui", "serve"):  # serve: a refusal is counted only as a 429 with Retry-After
        r = result[path]
        assert r["failed"] == 0, r["failures"]
        assert r["answered"] + r["refused_busy"] == 16 and r["answered"] > 0
    assert result["peak_rss_mb"] - result["peak_rss_mb_before"] < 500  # memory stays bounded under load
