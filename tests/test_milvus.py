"""RAG_STORE=milvus on Milvus's own engine: the server binary of the pinned milvus-lite, started here and stopped after."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from rag import RAG
from rag.dates import parse_range
from rag.index import milvus_engine
from rag.index import writer as idx
from rag.types import RagError

from .conftest import Q2012, ROOT, read_file

QUESTIONS = [
    Q2012,
    "Which Hamas leader was slated to visit Tehran?",
    "How did Hamas respond to Donald Trump?",
    "Who reported that Iran resumed funding Hamas?",
]
SCORE_TOLERANCE = 1e-5  # Knowhere's float32 sums against numpy's: the same passages, scores to about 1e-6
TEHRAN = "002_0cd934058d5d1ad9.txt"  # the 2014 article on the Hamas leader's visit
DAMASCUS = "000_7d385fec3d1c01e6.txt"  # the 2013 article on the 2012 break
HARBOUR = "Harbour town opens a desalination plant\n\nMarch 3, 2015\n\nThe harbour town of Porthleven opened a desalination plant on Tuesday. The plant turns seawater into drinking water for eleven thousand households, the mayor said.\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(code: str, **env: str) -> subprocess.CompletedProcess:
    """Python ``code`` in a new process, with this checkout's ``rag`` and the given environment."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full, timeout=120)


def _ids(rag: RAG, q: str, **how) -> list[str]:
    return [p.chunk.id for p in rag.retrieve(q, top_k=5, **how)]


@pytest.fixture(scope="module")
def index_copy(seed_index, tmp_path_factory):
    """The seed index in a folder of this module's own: the embedded store is written beside its generations."""
    d = tmp_path_factory.mktemp("milvus") / "index"
    shutil.copytree(seed_index, d)
    yield d
    milvus_engine.close_all()  # the engines this process started, as at exit


@pytest.fixture(scope="module")
def reference(index_copy) -> RAG:
    return RAG.open(index_copy, store="faiss")


@pytest.fixture(scope="module")
def embedded(index_copy) -> RAG:
    return RAG.open(index_copy, store="milvus")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The engine served on a port by ``python -m rag.index.milvus_engine``, as a Milvus server would be: what several processes share."""
    address = f"127.0.0.1:{_free_port()}"
    db = tmp_path_factory.mktemp("served") / "shared.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "rag.index.milvus_engine", str(db), "--address", address], stdout=subprocess.PIPE, text=True, env=env
    )
    line = server.stdout.readline()
    assert line.startswith("serving") and f"RAG_STORE_URL=http://{address}" in line, line
    yield f"http://{address}"
    milvus_engine.close_all()
    server.terminate()
    assert server.wait(30) == 0
    with pytest.raises(OSError):  # the engine ended with its server, not left running
        socket.create_connection(tuple(address.split(":")), timeout=1)


@pytest.mark.parametrize("question", QUESTIONS)
def test_milvus_gives_the_top_passages_faiss_gives(embedded, reference, question):
    got, want = embedded.retrieve(question, top_k=5), reference.retrieve(question, top_k=5)
    assert [p.chunk.id for p in got] == [p.chunk.id for p in want]
    assert [p.also_reported_by for p in got] == [p.also_reported_by for p in want]
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=SCORE_TOLERANCE)


def test_each_search_ranks_and_scores_as_the_index_does(embedded, reference):
    store, own = embedded.retriever.store, reference.retriever
    for q in QUESTIONS:
        qvec = own._query_vector(q)
        for got, want in ((store.dense(qvec, 30), own.dense(qvec, 30)), (store.sparse(q, 30), own.sparse(q, 30))):
            assert [i for i, _ in got] == [i for i, _ in want]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=SCORE_TOLERANCE)


def test_milvus_keeps_to_the_date_range(embedded, reference):
    for since, until, articles in [("2014", "2014", {TEHRAN}), ("2013", "2013-12", {DAMASCUS})]:
        got = embedded.retrieve(Q2012, top_k=5, since=since, until=until)
        assert got and {p.doc.id for p in got} == articles
        assert [p.chunk.id for p in got] == _ids(reference, Q2012, since=since, until=until)
    assert embedded.retrieve(Q2012, since="2015", until="2016") == []


def test_the_engine_filters_by_article_date_itself(embedded):
    st, chunks = embedded.retriever.store, embedded.index.chunks
    qvec = embedded.retriever._query_vector(Q2012)
    for since, until, article in [("2014", "2014", TEHRAN), ("2013-08-20", "2013-09", DAMASCUS)]:
        rng = parse_range(since, until)  # no mask given: the filter expression alone keeps other articles out
        dense, sparse = st.dense(qvec, 50, dates=rng), st.sparse(Q2012, 50, dates=rng)
        assert dense and sparse
        assert {chunks[i].doc_id for i, _ in dense + sparse} == {article}


def test_milvus_answers_with_exact_quotes(embedded, reference):
    a = embedded.ask(Q2012, llm="extractive")
    assert not a.abstained and "Damascus" in a.text
    assert any(c.source_file == DAMASCUS for c in a.citations)
    for c in a.citations:
        assert read_file(c.path)[c.start : c.end] == c.quote
    b = reference.ask(Q2012, llm="extractive")
    assert a.text == b.text and [(c.quote, c.start) for c in a.citations] == [(c.quote, c.start) for c in b.citations]


def test_the_seed_questions_get_the_same_answers_from_both_stores(embedded, reference, dev_questions):
    for q in dev_questions:
        a, b = embedded.ask(q["question"], llm="extractive"), reference.ask(q["question"], llm="extractive")
        assert (a.text, a.abstained) == (b.text, b.abstained), q["id"]
        assert [(c.path, c.start, c.end, c.quote) for c in a.citations] == [(c.path, c.start, c.end, c.quote) for c in b.citations]


def test_reopening_the_same_generation_writes_nothing(index_copy, embedded):
    st = embedded.retriever.store
    before = st.client.query(st.collection, filter="died >= 0", output_fields=["id", "born", "died"])
    assert len(before) == len(embedded.index.chunks)
    again = RAG.open(index_copy, store="milvus").retriever.store
    assert sorted(map(str, again.client.query(again.collection, filter="died >= 0", output_fields=["id", "born", "died"]))) == sorted(
        map(str, before)
    )
    assert (index_copy / "milvus" / "milvus.db").exists()


def _visible(store) -> int:
    return len(store.client.query(store.collection, filter=store._visible, output_fields=["id"]))


def test_the_store_follows_adds_updates_and_removals(seed_index, tmp_path):
    root = tmp_path / "index"
    shutil.copytree(seed_index, root)
    rag = RAG.open(root, store="milvus")
    assert any(p.doc.id == TEHRAN for p in rag.retrieve("Which Hamas leader was slated to visit Tehran?", top_k=3))

    (tmp_path / "harbour.txt").write_text(HARBOUR, encoding="utf-8")
    idx.add(root, [tmp_path / "harbour.txt"])
    assert rag.refresh()
    assert rag.retrieve("Which town opened a desalination plant?", top_k=1)[0].doc.id == "harbour.txt"

    (tmp_path / "harbour.txt").write_text(HARBOUR.replace("Porthleven", "Mousehole"), encoding="utf-8")
    idx.add(root, [tmp_path / "harbour.txt"])
    assert rag.refresh()
    top = rag.retrieve("Which town opened a desalination plant?", top_k=1)[0]
    assert "Mousehole" in top.chunk.text and "Porthleven" not in top.chunk.text

    idx.remove(root, [TEHRAN])
    assert rag.refresh()
    for q in ["Which Hamas leader was slated to visit Tehran?", "Meshaal to meet Ayatollah Khamenei", Q2012]:
        assert all(p.doc.id != TEHRAN for p in rag.retrieve(q, top_k=10))
    assert _visible(rag.retriever.store) == len(rag.index.chunks)


GONE = "001_fcf509d334208b0a.txt"
CRASH_POINTS = ["milvus_upsert", "milvus_publish", "milvus_purge"]
CRASH_QUESTIONS = [*QUESTIONS, "Which town opened a desalination plant?"]


def _history(root, url, tmp, between=None) -> tuple[RAG, RAG]:
    """Store generations 1 and 2 (2 drops an article), then write 4 (adds one, drops one); ``between(old reader)`` runs before 4 is opened."""
    RAG.open(root, store="milvus", store_url=url)
    idx.remove(root, [GONE])  # the write to 4 purges its entities, which generation 2 marks as dropped
    old = RAG.open(root, store="milvus", store_url=url)
    (tmp / "harbour.txt").write_text(HARBOUR, encoding="utf-8")
    idx.add(root, [tmp / "harbour.txt"])
    idx.remove(root, [TEHRAN])
    if between:
        between(old)
    return old, RAG.open(root, store="milvus", store_url=url)


def _served(rag: RAG) -> dict[str, list[str]]:
    return {q: _ids(rag, q) for q in CRASH_QUESTIONS}


@pytest.fixture(scope="module")
def unkilled(served, seed_index, tmp_path_factory) -> tuple[dict, dict]:
    """What readers of generations 2 and 4 are served when no write is killed: what a killed write must leave."""
    tmp = tmp_path_factory.mktemp("unkilled")
    shutil.copytree(seed_index, tmp / "index")
    old, new = _history(tmp / "index", served, tmp)
    return _served(old), _served(new)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_write_killed_leaves_each_reader_its_own_generation(point, served, seed_index, unkilled, tmp_path):
    """Killed after its upserts, before it publishes, or while it purges: a reader of the old generation is served
    exactly that, and the next opener of the new one finishes the write and is served what an unkilled write gives."""
    root = tmp_path / "index"
    shutil.copytree(seed_index, root)
    write = f"""
        from rag.index.reader import Index
        from rag.index.milvus import MilvusStore
        from rag.settings import Settings
        MilvusStore.open(Index.open({str(root)!r}), Settings(store="milvus", store_url={served!r}))
        print("the write was not killed")
        """

    def killed_write(old: RAG) -> None:
        died = _child(write, RAG_FAULT=point)
        assert died.returncode == -signal.SIGKILL, died.stdout + died.stderr
        assert _served(old) == unkilled[0]  # the old generation, never a mix

    old, new = _history(root, served, tmp_path, between=killed_write)
    assert _served(old) == unkilled[0]
    assert _served(new) == unkilled[1]
    assert unkilled[1]["Which town opened a desalination plant?"][0].startswith("harbour.txt")
    assert not any(i.startswith(TEHRAN) for ids in unkilled[1].values() for i in ids)
    st = new.retriever.store
    assert _visible(st) == len(new.index.chunks)
    assert not st.client.query(st.collection, filter=f'doc == "{GONE}"', output_fields=["id"])  # purged for good


def test_two_processes_read_one_engine(served, index_copy, reference):
    code = f"""
        import json
        from rag import RAG
        rag = RAG.open({str(index_copy)!r}, store="milvus", store_url={served!r})
        print(json.dumps({{q: [p.chunk.id for p in rag.retrieve(q, top_k=5)] for q in {QUESTIONS!r}}}))
        """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the store is filled first, so that the two readers only read
    RAG.open(index_copy, store="milvus", store_url=served)
    readers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    outs = [r.communicate(timeout=120)[0] for r in readers]
    assert [r.returncode for r in readers] == [0, 0]
    want = {q: _ids(reference, q) for q in QUESTIONS}
    assert [json.loads(o.strip().splitlines()[-1]) for o in outs] == [want, want]


def test_a_second_process_on_the_embedded_file_is_told_so(embedded, index_copy):
    out = _child(
        f"""
        from rag.index.reader import Index
        from rag.index.milvus import MilvusStore
        from rag.settings import Settings
        from rag.types import RagError
        try:
            MilvusStore.open(Index.open({str(index_copy)!r}), Settings(store="milvus"))
        except RagError as exc:
            print(exc)
        """
    )
    assert "is open in another process" in out.stdout and "RAG_STORE_URL" in out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "url, says",
    [
        ("file:///tmp/x.db", "not an http(s) server address"),
        ("http://[::1", "not a URL"),
        ("http://localhost:99999", "not a URL"),
        ("milvus store.db", "holds spaces"),
        ("index/store.sqlite", "neither a server address nor a .db file"),
        ("/proc/no-such-folder/store.db", "cannot make the folder"),
    ],
)
def test_a_bad_store_url_is_one_line_naming_it(index_copy, url, says):
    with pytest.raises(RagError, match=re.escape(says)) as err:
        RAG.open(index_copy, store="milvus", store_url=url)
    assert "\n" not in str(err.value)


def test_an_unreachable_cluster_or_an_engine_that_will_not_start_is_a_clear_error(index_copy, tmp_path):
    with pytest.raises(RagError, match="cannot reach the Milvus store at http://127.0.0.1:1"):
        RAG.open(index_copy, store="milvus", store_url="http://127.0.0.1:1", store_timeout_s=2.0)
    (tmp_path / "folder.db").mkdir()  # a folder where the engine's file should be
    with pytest.raises(RagError, match="Milvus engine .* stopped as it started"):
        RAG.open(index_copy, store="milvus", store_url=str(tmp_path / "folder.db"))


def test_the_packaged_engine_is_milvus_itself():
    binary = milvus_engine.engine_binary()
    assert binary.name == "milvus" and binary.parent.name == "lib" and binary.stat().st_size > 10_000_000


def test_rag_ask_on_a_store_it_cannot_reach_prints_one_line(index_copy):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAG_STORE": "milvus", "RAG_STORE_URL": "http://127.0.0.1:1", "RAG_STORE_TIMEOUT_S": "2"}
    out = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ask", Q2012, "--index", str(index_copy), "--llm", "extractive"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Milvus store at http://127.0.0.1:1"), out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_extra_is_a_clear_error(index_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if the extra were not installed
    with pytest.raises(RagError, match=r"newsrag\[milvus\]"):
        RAG.open(index_copy, store="milvus", store_url="http://127.0.0.1:19530")


def test_bench_scale_measures_the_embedded_engine_up_to_its_limit(seed_index, tmp_path):
    from .test_cli import rag_cmd

    args = [
        "bench",
        "scale",
        "--index",
        str(seed_index),
        "--sizes",
        "1000,2000",
        "--queries",
        "10",
        "--qdrant-max",
        "0",
        "--milvus-max",
        "1000",
    ]
    p = rag_cmd(*args, "--out", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads(p.stdout)["rows"]
    assert rows[0]["milvus_build_s"] > 0 and 0 < rows[0]["milvus_p50_ms"] <= rows[0]["milvus_p95_ms"] and rows[0]["milvus_engine_mb"] > 0
    assert "milvus_p50_ms" not in rows[1]  # only up to --milvus-max
    assert "Milvus embedded" in (tmp_path / "scale.md").read_text()
