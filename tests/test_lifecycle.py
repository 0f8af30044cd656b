"""Index lifecycle: add, remove and sync by content hash; a writer killed mid-update loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rag import RAG
from rag.index.reader import Index
from rag.index.writer import add, build, remove

NEW = "Zorblat Bridge opens\n\nMay 5, 2019\n\nThe Zorblat Bridge over the Vesna river opened on 4 May 2019. Mayor Ilse Brandt cut the ribbon.\n"


def test_add_remove_and_sync_touch_only_what_changed(corpus, tmp_path):
    idx = tmp_path / "idx"
    build(idx, [corpus / "000_7d385fec3d1c01e6.txt", corpus / "002_0cd934058d5d1ad9.txt"])
    extra = tmp_path / "zorblat.txt"
    extra.write_text(NEW)
    rep = add(idx, [extra])
    assert rep.added == ["zorblat.txt"] and len(rep.unchanged) == 2 and rep.embedded_chunks == 1
    rep = remove(idx, ["002_0cd934058d5d1ad9.txt"])
    assert rep.removed == ["002_0cd934058d5d1ad9.txt"] and rep.embedded_chunks == 0
    assert set(Index.open(idx).docs) == {"000_7d385fec3d1c01e6.txt", "zorblat.txt"}
    answer = RAG.open(idx).ask("Who cut the ribbon at the Zorblat Bridge?", llm="extractive")
    assert any(c.source_file == "zorblat.txt" for c in answer.citations)
    rep = build(idx, [corpus])  # sync to the folder: the extra file was not in it
    assert rep.removed == ["zorblat.txt"] and set(rep.added) == {"001_fcf509d334208b0a.txt", "002_0cd934058d5d1ad9.txt", "003_40096b35d0a24c1b.txt"}


@pytest.mark.parametrize("point", ["after_embed", "during_write", "before_swap"])
def test_writer_killed_mid_update_leaves_the_old_index_whole(corpus, tmp_path, point):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    before = Index.open(idx)
    extra = tmp_path / "zorblat.txt"
    extra.write_text(NEW)
    env = {**os.environ, "RAG_FAULT": point}
    p = subprocess.run([sys.executable, "-m", "rag.cli", "index", "add", str(extra), "--index", str(idx)], env=env, capture_output=True, timeout=300)
    assert p.returncode == -9  # killed, as by a power cut
    after = Index.open(idx)
    assert set(after.docs) == set(before.docs) and len(after.chunks) == len(before.chunks)
    assert not RAG.open(idx).ask("Why did ties between Iran and Hamas break down in 2012?", llm="extractive").abstained
    # the lock died with the writer; the next update completes and cleans up the debris
    rep = add(idx, [extra])
    assert rep.added == ["zorblat.txt"]
    assert "zorblat.txt" in Index.open(idx).docs
    assert not list(idx.glob(".tmp-*")) and len(list(idx.glob("gen-*"))) <= 2


def test_second_writer_gets_a_clear_busy_error(corpus, tmp_path):
    import fcntl

    from rag.types import RagError

    idx = tmp_path / "idx"
    build(idx, [corpus])
    with open(idx / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RagError, match="another process is updating the index"):
            build(idx, [corpus])
    assert len(Index.open(idx).docs) == 4


def test_concurrent_questions_are_all_answered_or_refused_as_busy(seed_index):
    """A bounded load through the Python API: every request gets its own answer or a clear busy error."""
    from concurrent.futures import ThreadPoolExecutor

    from rag.types import RagError

    rag = RAG.open(seed_index, max_pending=3, busy_wait_s=0.05)
    questions = ["Why did ties between Iran and Hamas break down in 2012?", "Who declared a joint command with Islamic Jihad?", "What is the capital of Australia?"] * 8

    def one(q):
        try:
            return q, rag.ask(q, llm="extractive")
        except RagError as exc:
            return q, str(exc)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, questions))
    answered = [(q, a) for q, a in results if not isinstance(a, str)]
    refused = [a for _, a in results if isinstance(a, str)]
    assert len(answered) + len(refused) == len(questions) and answered
    assert all(r.startswith("busy:") for r in refused)
    for q, a in answered:  # each request got the answer to its own question
        assert a.question == q
        assert a.abstained == q.startswith("What is the capital")
