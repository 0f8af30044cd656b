"""An index that grows in segments: a write touches only its own articles, and reads as a fresh build of the same articles would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict

import pytest

from rag.index.reader import Index
from rag.index.retrieval import HybridRetriever
from rag.index.writer import add, build, compact, remove
from rag.settings import Settings

COPY, CANONICAL = "001_fcf509d334208b0a.txt", "003_40096b35d0a24c1b.txt"  # the same report; 003 states its date and outlet
QUESTIONS = [
    "Why did ties between Iran and Hamas break down in 2012?",
    "Tehran-Hamas ties warming up after the Iranian elections",
    "Who declared a joint command with Islamic Jihad?",
]


def segment_files(idx):
    return {p.relative_to(idx): p.stat().st_mtime_ns for p in (idx / "segments").rglob("*") if p.is_file()}


# A passage embedded in another batch (the grown index embeds only what it adds) differs from a fresh build's in the
# fourth decimal: the embedder pads a batch to its longest text, and that moves the float sums, not the ranking.
SCORE_TOLERANCE = 2e-3


def top_passages(idx) -> list[dict[str, float]]:
    retriever = HybridRetriever(Index.open(idx), Settings.from_env())
    return [{p.chunk.id: p.score for p in retriever.retrieve(q, top_k=8)} for q in QUESTIONS]


def same_top_passages(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    for got, want in zip(a, b, strict=True):
        assert set(got) == set(want)
        assert all(abs(got[k] - want[k]) < SCORE_TOLERANCE for k in got), (got, want)


def same_as_fresh_build(idx, corpus_files, tmp_path):
    """The grown index holds what a build of the same files from scratch holds, and retrieves the same passages."""
    fresh = tmp_path / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    build(fresh, corpus_files)
    grown, built = Index.open(idx), Index.open(fresh)
    assert {k: asdict(d) for k, d in grown.docs.items()} == {k: asdict(d) for k, d in built.docs.items()}
    assert sorted(c.id for c in grown.chunks) == sorted(c.id for c in built.chunks)
    same_top_passages(top_passages(idx), top_passages(fresh))


def test_an_added_report_copy_moves_only_its_copy_and_reads_as_a_fresh_build(corpus, tmp_path):
    idx = tmp_path / "idx"
    first = [corpus / n for n in sorted(os.listdir(corpus)) if n.endswith(".txt") and n != CANONICAL]
    build(idx, first)
    assert Index.open(idx).docs[COPY].duplicate_of is None  # alone, the copy is the report
    before = segment_files(idx)
    rep = add(idx, [corpus / CANONICAL])
    assert rep.added == [CANONICAL]
    assert set(before.items()) <= set(segment_files(idx).items())  # the first segment is untouched, shared by reference
    assert len(list((idx / "segments").glob("seg-*"))) == 2
    grown = Index.open(idx)
    assert grown.docs[COPY].duplicate_of == CANONICAL and grown.docs[COPY].date == grown.docs[CANONICAL].date
    same_as_fresh_build(idx, sorted(corpus.glob("*.txt")), tmp_path)
    # and back: without the canonical report the copy stands alone again
    remove(idx, [CANONICAL])
    assert Index.open(idx).docs[COPY].duplicate_of is None
    same_as_fresh_build(idx, first, tmp_path)


def test_compaction_merges_segments_into_what_a_fresh_build_is(corpus, tmp_path):
    idx = tmp_path / "idx"
    files = sorted(corpus.glob("*.txt"))
    build(idx, files[:1])
    for f in files[1:]:
        add(idx, [f])
    remove(idx, [files[0].name])
    rep = compact(idx)
    assert rep.embedded_chunks == 0  # nothing is embedded again
    assert len(list((idx / "segments").glob("seg-*"))) <= 2  # the previous generation's may stay for its readers
    assert len(Index.open(idx).manifest.segments) == 1
    same_as_fresh_build(idx, files[1:], tmp_path)


def test_small_writes_are_merged_so_segments_stay_few(tmp_path):
    idx = tmp_path / "idx"
    folder = tmp_path / "news"
    folder.mkdir()
    for k in range(12):
        f = folder / f"note{k:02d}.txt"
        f.write_text(f"Council note {k}\n\nMay {k + 1}, 2019\n\nThe council of Vesna met for session number {k} and voted on item {k * 7}.\n")
        (build if k == 0 else add)(idx, [f])
        # a write merges the newest segments while they are no bigger than it: at most log2(articles) + 1 segments
        assert len(Index.open(idx).manifest.segments) <= (k + 1).bit_length()
    assert len(Index.open(idx).docs) == 12


@pytest.mark.parametrize("point", ["after_embed", "during_write", "before_swap"])
def test_compaction_killed_midway_leaves_the_index_whole(corpus, tmp_path, point):
    idx = tmp_path / "idx"
    files = sorted(corpus.glob("*.txt"))
    build(idx, files[:2])
    add(idx, files[2:])
    before = Index.open(idx)
    env = {**os.environ, "RAG_FAULT": point}
    p = subprocess.run([sys.executable, "-m", "rag.cli", "index", "compact", "--index", str(idx)], env=env, capture_output=True, timeout=300)
    assert p.returncode == -9  # killed, as by a power cut
    after = Index.open(idx)
    assert set(after.docs) == set(before.docs) and [c.id for c in after.chunks] == [c.id for c in before.chunks]
    # the next write completes and clears what the killed one left
    compact(idx)
    assert len(Index.open(idx).manifest.segments) == 1
    assert not list(idx.glob(".tmp-*")) and not list((idx / "segments").glob(".tmp-*"))


def test_a_rebuild_that_would_drop_most_articles_refuses(corpus, tmp_path):
    from rag.types import RagError

    idx = tmp_path / "idx"
    build(idx, [corpus])
    with pytest.raises(RagError, match="would remove 3 of the 4 indexed articles"):
        build(idx, [corpus / "000_7d385fec3d1c01e6.txt"], rebuild=True)  # a rebuild reads the ids from the segments
    assert len(Index.open(idx).docs) == 4
