"""What a long-running server keeps per visitor stays bounded: endpoint clients, shingles, a conversation, a record file's reading."""

from __future__ import annotations

import gzip
import time

from rag import RAG, api
from rag.index import retrieval
from rag.ingest import records
from rag.ingest.corpus import load_file

from .conftest import Q2012


def test_endpoint_clients_are_kept_for_the_most_recent_visitors_only(seed_index):
    rag = RAG.open(seed_index)
    first = rag.settings.with_(llm="openai", openai_base_url="http://127.0.0.1:9/v1", openai_api_key="visitor-0-key")
    client = rag.llm(first)
    assert rag.llm(first) is client  # the same visitor's next question reuses its client
    for n in range(1, api.ENDPOINT_CLIENTS + 1):  # as many visitors after it, each with a key of their own
        rag.llm(first.with_(openai_api_key=f"visitor-{n}-key"))
    assert rag.llm(first) is not client  # the first visitor's client was let go, and is made again on demand
    assert rag.llm(first).settings.openai_api_key == "visitor-0-key"


def test_the_duplicate_shingle_cache_holds_at_most_its_limit(seed_index, monkeypatch):
    monkeypatch.setattr(retrieval, "SHINGLE_CACHE_CHUNKS", 3)
    rag = RAG.open(seed_index)
    for question in (Q2012, "Who is the leader of Hamas?", "What did Qatar do?"):
        assert not rag.ask(question, llm="extractive").abstained
    assert rag.retriever._shingles.cache_info().currsize <= 3


def test_a_conversation_keeps_its_last_turns_only(seed_index, tmp_path):
    from ui.app import MAX_TURNS, Handlers
    from ui.render import Turn

    rag = RAG.open(seed_index)
    handlers = Handlers(rag, tmp_path / "uploads")
    old = [Turn(question=f"question {n}", error="the endpoint did not answer") for n in range(MAX_TURNS + 20)]
    *_, (_, conv, _, _) = handlers.respond(Q2012, old, "extractive", 5, "", "")
    assert len(conv) == MAX_TURNS
    assert conv[-1].question == Q2012 and conv[-1].answer is not None and not conv[-1].answer.abstained
    assert conv[0].question == f"question {len(old) - MAX_TURNS + 1}"  # the oldest went first


def _gz(path, data: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(data)


GOOD = b'{"title": "Dam opens", "text": "The Arlo dam opened on Tuesday, the water board said."}\n'


def test_a_gzip_of_blank_lines_is_read_only_as_far_as_one_record_may_reach(tmp_path):
    f = tmp_path / "blank.jsonl.gz"
    _gz(f, GOOD + b"\n" * 50_000_000 + GOOD.replace(b"Arlo", b"Berro"))  # 49 KB on disk, 50 MB inside
    t0 = time.monotonic()
    result = load_file(f, max_bytes=1_000_000)
    assert time.monotonic() - t0 < records.GAP_SECONDS  # stopped after a megabyte, not read to the end
    assert [d.title for d in result.documents] == ["Dam opens"]  # the record before the blank lines is kept
    [line] = result.errors
    assert line.startswith("blank.jsonl.gz line ") and "1,000,000 bytes of blank lines" in line and "\n" not in line


def test_a_record_file_that_yields_no_record_for_too_long_is_cut_short(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "GAP_SECONDS", 0.5)
    f = tmp_path / "bad.jsonl.gz"
    _gz(f, GOOD + b"x\n" * 20_000_000)  # 20 million bad lines
    result = load_file(f)
    assert [d.title for d in result.documents] == ["Dam opens"]
    assert any("0.5 s of reading found no record" in e and e.startswith("bad.jsonl.gz line ") for e in result.errors)
