"""The approximate vector index (RAG_VECTOR_INDEX=ivf): the same passages as exact search, cached per segment, never an error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rag.dates import DateRange, parse_range
from rag.index import ann
from rag.index.reader import Index
from rag.index.retrieval import HybridRetriever
from rag.index.writer import add, build
from rag.settings import Settings
from rag.types import RagError

from .conftest import SEEDS, SHARED, need_shared
from .test_cli import rag_cmd

RTQA = SHARED / "bench" / "realtimeqa"
WEEK = "20220617"  # 191 real news pages
QUESTIONS = [
    "Why did ties between Iran and Hamas break down in 2012?",
    "Which country's prime minister resigned this week?",
    "What did the Federal Reserve do to interest rates?",
    "Who won the NBA finals?",
    "What happened to the price of gasoline?",
    "Which company announced layoffs?",
    "What did the court rule on abortion?",
    "Where did the earthquake strike?",
]


@pytest.fixture(scope="module")
def news_index(tmp_path_factory):
    need_shared(RTQA / "weeks")
    from rag.bench.rtqa_data import load_dataset, write_corpus

    d = tmp_path_factory.mktemp("news")
    for p in SEEDS.glob("*.txt"):
        shutil.copy(p, d / p.name)
    write_corpus(load_dataset(RTQA, [WEEK]).pages, d / "rtqa")
    root = tmp_path_factory.mktemp("ann") / "index"
    build(root, [d], Settings())
    return root


def _top(retriever: HybridRetriever, q: str, k: int = 10, dates: DateRange | None = None) -> list[int]:
    return [c for c, _ in retriever.dense(retriever._query_vector(q), k, retriever._allowed(dates), dates)]


def test_ivf_finds_what_exact_search_finds(news_index):
    idx = Index.open(news_index)
    flat = HybridRetriever(idx, Settings(vector_index="flat"))
    assert flat.ivf is None
    every_list = HybridRetriever(idx, Settings(vector_index="ivf", ivf_nprobe=10_000))
    assert every_list.ivf is not None and every_list.ivf.ivf.nlist > 10  # real lists, not one
    some = HybridRetriever(idx, Settings(vector_index="ivf", ivf_nprobe=8))
    recall = []
    for q in QUESTIONS:
        exact = _top(flat, q)
        assert _top(every_list, q) == exact  # every list probed: exact search, same order
        recall.append(len(set(_top(some, q)) & set(exact)) / len(exact))
    assert np.mean(recall) >= 0.8, recall
    # what a reader sees: the same passages for the question the seeds answer
    q = QUESTIONS[0]
    assert [p.chunk.id for p in every_list.retrieve(q)] == [p.chunk.id for p in flat.retrieve(q)]


@pytest.mark.parametrize("exact_below", [ann.EXACT_BELOW, 0])  # a small range searched exactly, or through the lists
def test_ivf_keeps_to_a_date_range(news_index, monkeypatch, exact_below):
    monkeypatch.setattr(ann, "EXACT_BELOW", exact_below)
    idx = Index.open(news_index)
    ivf = HybridRetriever(idx, Settings(vector_index="ivf", ivf_nprobe=4))
    flat = HybridRetriever(idx, Settings(vector_index="flat"))
    q = "What did Iran do about its financial support for Hamas?"
    for dates in (parse_range("2022-06-01", "2022-06-30"), parse_range("2014-01-01", "2014-12-31")):
        got = _top(ivf, q, 10, dates)
        assert len(got) == len(_top(flat, q, 10, dates)) and all(dates.holds(idx.docs[idx.chunks[c].doc_id].date) for c in got)
    # the seeds' one 2014 article has fewer passages than asked for: the lists probed cannot fill the top 10,
    # and the search falls back to the exact one over the range, as the flat search returns
    in_2014 = parse_range("2014-01-01", "2014-12-31")
    assert _top(ivf, q, 10, in_2014) == _top(flat, q, 10, in_2014)


def test_ivf_lists_are_cached_per_segment_and_a_write_assigns_only_its_own(news_index, tmp_path):
    root = tmp_path / "index"
    shutil.copytree(news_index, root)
    shutil.rmtree(root / ann.ANN_DIR, ignore_errors=True)
    s = Settings(vector_index="ivf")
    HybridRetriever(Index.open(root), s)
    centroids = root / ann.ANN_DIR / "centroids.npz"
    cached = {p.name: p.stat().st_mtime_ns for p in (root / ann.ANN_DIR).glob("*/*.npy")}
    assert centroids.is_file() and cached
    trained = centroids.stat().st_mtime_ns
    HybridRetriever(Index.open(root), s)  # a second reader: nothing trained or assigned again
    assert centroids.stat().st_mtime_ns == trained
    assert {p.name: p.stat().st_mtime_ns for p in (root / ann.ANN_DIR).glob("*/*.npy")} == cached
    new = tmp_path / "new.txt"
    new.write_text("The harbour authority opened a new container terminal on Tuesday, doubling the port's capacity.\n")
    add(root, [new], s)
    r = HybridRetriever(Index.open(root), s)
    assert centroids.stat().st_mtime_ns == trained  # the same centroids serve the grown index
    after = {p.name: p.stat().st_mtime_ns for p in (root / ann.ANN_DIR).glob("*/*.npy")}
    assert {k: v for k, v in after.items() if k in cached} == cached and len(after) == len(cached) + 1
    hit = r.retrieve("Which port opened a new container terminal?", top_k=1)[0]
    assert hit.doc.id.endswith("new.txt")
    # damaged cache files are derived data: trained and assigned again, never an error
    centroids.write_bytes(b"not an npz")
    for p in (root / ann.ANN_DIR).glob("*/*.npy"):
        p.write_bytes(b"\x93NUMPY broken")
    r = HybridRetriever(Index.open(root), s)
    assert r.retrieve("Which port opened a new container terminal?", top_k=1)[0].doc.id.endswith("new.txt")


def test_auto_is_exact_below_its_size_and_a_wrong_value_is_one_line(seed_index):
    assert HybridRetriever(Index.open(seed_index), Settings()).ivf is None  # auto: a small index is searched exactly
    assert ann.choice(Settings(), ann.AUTO_IVF_VECTORS) == "ivf"
    with pytest.raises(RagError, match=r"vector_index is 'hnsw' \(RAG_VECTOR_INDEX\): it must be one of auto, flat, ivf"):
        Settings(vector_index="hnsw")  # refused when the settings are built, before any index is opened
    p = rag_cmd("ask", "Why did ties between Iran and Hamas break down in 2012?", "--llm", "extractive", "--index", str(seed_index), env={"RAG_VECTOR_INDEX": "hnsw"})
    assert p.returncode == 1 and "vector_index is 'hnsw' (RAG_VECTOR_INDEX)" in p.stderr and "Traceback" not in p.stderr
