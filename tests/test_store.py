"""The same retrieval and answers whichever store searches: the index's own FAISS + bm25s, or an embedded Qdrant collection."""

from __future__ import annotations

import shutil
import sys

import pytest

from rag import RAG
from rag.index import writer as idx
from rag.types import RagError

from .conftest import Q2012, read_file

STORES = ["faiss", "qdrant"]
QUESTIONS = [
    Q2012,
    "Which Hamas leader was slated to visit Tehran?",
    "How did Hamas respond to Donald Trump?",
    "Who reported that Iran resumed funding Hamas?",
]
# Qdrant computes the same BM25 (Lucene IDF, the same term weights) and inner products in float64
# where FAISS and bm25s use float32: scores agree to about 1e-6, so rankings are expected to be equal.
SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def index_copy(seed_index, tmp_path_factory):
    """The seed index in a folder of this module's own: the embedded store is written beside its generations."""
    d = tmp_path_factory.mktemp("store") / "index"
    shutil.copytree(seed_index, d)
    return d


@pytest.fixture(scope="module")
def reference(index_copy) -> RAG:
    return RAG.open(index_copy, store="faiss")


@pytest.fixture(scope="module", params=STORES)
def opened(request, index_copy) -> RAG:
    return RAG.open(index_copy, store=request.param)


@pytest.mark.parametrize("question", QUESTIONS)
def test_every_store_gives_the_same_top_passages(opened, reference, question):
    got, want = opened.retrieve(question, top_k=5), reference.retrieve(question, top_k=5)
    assert [p.chunk.id for p in got] == [p.chunk.id for p in want]
    assert [p.also_reported_by for p in got] == [p.also_reported_by for p in want]
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=SCORE_TOLERANCE)


def test_every_store_keeps_to_the_date_range(opened, reference):
    for since, until, articles in [("2014", "2014", {"002_0cd934058d5d1ad9.txt"}), ("2013", "2013-12", {"000_7d385fec3d1c01e6.txt"})]:
        got = opened.retrieve(Q2012, top_k=5, since=since, until=until)
        assert got and {p.doc.id for p in got} == articles
        assert [p.chunk.id for p in got] == [p.chunk.id for p in reference.retrieve(Q2012, top_k=5, since=since, until=until)]
    assert opened.retrieve(Q2012, since="2015", until="2016") == []


def test_every_store_answers_with_exact_quotes(opened):
    a = opened.ask(Q2012, llm="extractive")
    assert not a.abstained and "Damascus" in a.text
    assert any(c.source_file == "000_7d385fec3d1c01e6.txt" for c in a.citations)
    for c in a.citations:
        assert read_file(c.path)[c.start : c.end] == c.quote


@pytest.mark.parametrize("store", STORES)
def test_the_store_follows_index_updates(store, corpus, tmp_path):
    root = tmp_path / "index"
    idx.build(root, [corpus])
    rag = RAG.open(root, store=store)
    before = rag.retrieve("Which Hamas leader was slated to visit Tehran?", top_k=3)
    assert any(p.doc.id == "002_0cd934058d5d1ad9.txt" for p in before)

    new = tmp_path / "harbour.txt"
    new.write_text(
        "Harbour town opens a desalination plant\n\nMarch 3, 2015\n\n"
        "The harbour town of Porthleven opened a desalination plant on Tuesday. "
        "The plant turns seawater into drinking water for eleven thousand households, the mayor said.\n",
        encoding="utf-8",
    )
    idx.add(root, [new])
    assert rag.refresh()
    top = rag.retrieve("Which town opened a desalination plant?", top_k=1)
    assert top[0].doc.id == "harbour.txt"

    idx.remove(root, ["002_0cd934058d5d1ad9.txt"])
    assert rag.refresh()
    for q in ["Which Hamas leader was slated to visit Tehran?", "Meshaal to meet Ayatollah Khamenei", Q2012]:
        assert all(p.doc.id != "002_0cd934058d5d1ad9.txt" for p in rag.retrieve(q, top_k=10))
    if store == "qdrant":  # the collection holds this generation's passages and nothing else
        st = rag.retriever.store
        assert st.client.count(st.collection).count == len(rag.index.chunks)


def test_the_embedded_store_is_brought_in_step_without_resending_what_it_has(index_copy):
    from rag.index.mirror import point_keys

    rag = RAG.open(index_copy, store="qdrant")
    st = rag.retriever.store
    before = st.client.count(st.collection).count
    assert before == len(point_keys(rag.index)) == len(rag.index.chunks)
    assert RAG.open(index_copy, store="qdrant").retriever.store.client.count(st.collection).count == before
    assert (index_copy / "qdrant").is_dir()


def test_an_unknown_store_or_a_missing_extra_is_a_clear_error(index_copy, monkeypatch):
    with pytest.raises(RagError, match=r"store is .chroma. \(RAG_STORE\): it must be one of faiss, milvus, qdrant"):
        RAG.open(index_copy, store="chroma")
    monkeypatch.setitem(sys.modules, "qdrant_client", None)  # as if the extra were not installed
    with pytest.raises(RagError, match=r"newsrag\[qdrant\]"):
        RAG.open(index_copy, store="qdrant")


def test_the_store_filters_by_article_date_itself(index_copy):
    from rag.dates import parse_range

    rag = RAG.open(index_copy, store="qdrant")
    st, chunks = rag.retriever.store, rag.index.chunks
    qvec = rag.retriever._query_vector(Q2012)
    for since, until, article in [("2014", "2014", "002_0cd934058d5d1ad9.txt"), ("2013-08-20", "2013-09", "000_7d385fec3d1c01e6.txt")]:
        rng = parse_range(since, until)  # no mask given: the payload filter alone keeps other articles out
        dense, sparse = st.dense(qvec, 50, dates=rng), st.sparse(Q2012, 50, dates=rng)
        assert dense and sparse
        assert {chunks[i].doc_id for i, _ in dense + sparse} == {article}
