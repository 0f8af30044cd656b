"""Indexing on a real two-node Ray cluster on 127.0.0.1 gives the index a local build gives."""

from __future__ import annotations

import json
import shutil

import pytest

from rag import RAG
from rag.index.distributed import offline
from rag.index.reader import Index
from rag.index.retrieval import HybridRetriever
from rag.index.segments import SEGMENTS_DIR
from rag.index.writer import build
from rag.settings import Settings

from .conftest import Q2012, ROOT, SEEDS
from .test_cli import rag_cmd

ray = pytest.importorskip("ray", reason='Ray is the optional extra "rag[ray]"; make test installs it')

RTQA = ROOT.parent / "shared" / "bench" / "realtimeqa"
WEEK = "20220617"  # 191 real news pages


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, one CPU each, both on this machine; the test process is the driver."""
    from ray.cluster_utils import Cluster

    offline()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    """The seeds, a dated copy of one (its date reaches the undated original's passages), a record file and real pages."""
    d = tmp_path_factory.mktemp("news")
    for p in SEEDS.glob("*.txt"):
        shutil.copy(p, d / p.name)
    first = sorted(SEEDS.glob("*.txt"))[0]
    (d / "copy.txt").write_text(first.read_text())
    (d / "copy.txt.meta.json").write_text(json.dumps({"date": "2016-05-04", "outlet": "Wire"}))
    records = [
        {"id": "r1", "title": "Dam opens", "date": "2014-03-25", "text": "The new dam opened on Tuesday. Officials said it cost two billion dollars."},
        {"id": "r2", "title": "Port expands", "text": "The port added a third terminal. It can now take the largest ships."},
    ]
    (d / "wire.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if (RTQA / "weeks").is_dir():
        from rag.bench.rtqa_data import load_dataset, write_corpus

        write_corpus(load_dataset(RTQA, [WEEK]).pages, d / "rtqa")
    return d


@pytest.fixture(scope="module")
def both(news, tmp_path_factory):
    local = tmp_path_factory.mktemp("local") / "index"
    build(local, [news], Settings())
    return Index.open(local)


@pytest.fixture(scope="module")
def on_ray(cluster, news, tmp_path_factory):
    root = tmp_path_factory.mktemp("ray") / "index"
    report = build(root, [news], Settings(ray=cluster.address))
    return root, report


def _articles(idx: Index) -> dict[str, tuple]:
    """Each article as stored, with its passages and its passages' vectors."""
    vectors = idx.vector_matrix()
    by_doc: dict[str, list] = {}
    for n, c in enumerate(idx.chunks):
        row = idx.row_of.get(n)
        by_doc.setdefault(c.doc_id, []).append((c.text, [(s.start, s.end) for s in c.sentences], None if row is None else vectors[row]))
    return {i: (d, by_doc.get(i, [])) for i, d in idx.docs.items()}


def test_a_two_node_cluster_builds_the_index_a_local_build_makes(on_ray, both):
    root, report = on_ray
    assert not report.errors and report.embedded_chunks > 0
    assert len(list((root / SEGMENTS_DIR).glob("seg-*"))) > 1  # written by the workers, batch by batch
    on_ray = Index.open(root)
    mine, theirs = _articles(on_ray), _articles(both)
    assert sorted(mine) == sorted(theirs)
    assert len(mine) >= (190 if (RTQA / "weeks").is_dir() else 7)
    for i in theirs:
        (d1, p1), (d2, p2) = mine[i], theirs[i]
        assert d1 == d2, i  # every field, duplicate marks and the metadata one copy lends another included
        assert [(t, s) for t, s, _ in p1] == [(t, s) for t, s, _ in p2], i
        for (_, _, v1), (_, _, v2) in zip(p1, p2):
            assert (v1 is None) == (v2 is None)
            if v1 is not None:  # batches differ in padding: equal within the embedder's bf16 precision
                assert float(v1 @ v2) > 0.999
    assert on_ray.docs["copy.txt"].duplicate_of or on_ray.docs[sorted(p.name for p in SEEDS.glob("*.txt"))[0]].duplicate_of
    assert on_ray.raw("wire.jsonl#r1") == both.raw("wire.jsonl#r1")


def test_the_cluster_built_index_retrieves_and_answers_as_the_local_one(on_ray, both):
    root, _ = on_ray
    questions = [Q2012, "When did the new dam open?", "What did Hamas say about Iran's funding?"]
    for q in questions:
        a = [(h.chunk.doc_id, h.chunk.text) for h in HybridRetriever(Index.open(root), Settings()).retrieve(q)]
        b = [(h.chunk.doc_id, h.chunk.text) for h in HybridRetriever(both, Settings()).retrieve(q)]
        assert a == b, q
    answered = 0
    for q in questions:
        one = RAG.open(root, Settings(llm="extractive")).ask(q)
        two = RAG(both, Settings(llm="extractive")).ask(q)
        assert one.text == two.text and [(c.source_file, c.start, c.end) for c in one.citations] == [(c.source_file, c.start, c.end) for c in two.citations]
        answered += not one.abstained
    assert answered


def test_adding_on_the_cluster_embeds_only_the_new_articles(cluster, news, tmp_path):
    root = tmp_path / "index"
    build(root, [SEEDS], Settings(ray=cluster.address))
    report = build(root, [SEEDS, news / "wire.jsonl"], Settings(ray=cluster.address))
    assert report.added == ["wire.jsonl#r1", "wire.jsonl#r2"] and not report.updated
    assert report.embedded_chunks == 2
    assert "wire.jsonl#r2" in Index.open(root).docs


def test_rag_index_ray_joins_a_running_cluster_and_a_killed_writer_leaves_the_index_whole(cluster, news, tmp_path):
    index = str(tmp_path / "index")
    p = rag_cmd("index", str(SEEDS), "--index", index, "--ray", cluster.address)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "4 added" in p.stdout
    # killed after the workers wrote their segments, before the generation is published
    p = rag_cmd("index", "add", str(news / "wire.jsonl"), "--index", index, "--ray", cluster.address, env={"RAG_FAULT": "after_embed"})
    assert p.returncode == -9
    assert list((tmp_path / "index" / SEGMENTS_DIR).glob(".tmp-ray-*"))
    assert sorted(Index.open(index).docs) == sorted(f.name for f in SEEDS.glob("*.txt"))
    p = rag_cmd("index", "add", str(news / "wire.jsonl"), "--index", index, "--ray", cluster.address)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 added" in p.stdout and len(Index.open(index).docs) == 6
    assert not list((tmp_path / "index" / SEGMENTS_DIR).glob(".tmp-*"))  # the killed writer's folders cleaned up


def test_an_unreachable_cluster_is_one_clear_line_and_the_index_is_untouched(seed_index, news, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(seed_index, index)
    before = sorted(Index.open(index).docs)
    for address, words in (("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"), ("nonsense", "give a cluster's HOST:PORT")):
        p = rag_cmd("index", "add", str(news / "wire.jsonl"), "--index", str(index), "--ray", address)
        assert p.returncode == 1 and words in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert sorted(Index.open(index).docs) == before
