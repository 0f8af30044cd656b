"""Building, reopening and incrementally updating the index."""

from __future__ import annotations

import pytest

from rag.index import plan
from rag.index.reader import Index
from rag.index.writer import build
from rag.types import RagError

from .conftest import SEEDS

ARTICLE = "Officials opened the Zorblat Bridge over the Vesna river on 4 May 2019, the city said.\n"


def test_reopening_and_rebuilding_unchanged_corpus_embeds_nothing(corpus, tmp_path):
    idx = tmp_path / "idx"
    first = build(idx, [corpus])
    assert len(first.added) == 4 and first.embedded_chunks == first.n_chunks > 0
    again = build(idx, [corpus])
    assert again.embedded_chunks == 0 and len(again.unchanged) == 4
    opened = Index.open(idx)
    assert len(opened.chunks) == first.n_chunks and opened.vectors.ntotal == first.n_chunks
    manifest = opened.manifest
    assert manifest.embedder.endswith("all-MiniLM-L6-v2")
    assert manifest.chunker.chunk_chars > 0
    assert set(opened.docs) == {p.name for p in SEEDS.glob("*.txt")}
    assert all(len(d.content_hash) == 64 for d in opened.docs.values())


def test_changed_added_and_removed_articles_only_reembed_themselves(corpus, tmp_path):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    n_000 = Index.open(idx).chunk_counts["000_7d385fec3d1c01e6.txt"]
    with open(corpus / "000_7d385fec3d1c01e6.txt", "a") as f:
        f.write("\nHamas later denied the report in a statement on Tuesday.\n")
    (corpus / "zorblat.txt").write_text(ARTICLE)
    (corpus / "002_0cd934058d5d1ad9.txt").unlink()
    rep = build(idx, [corpus])
    assert rep.updated == ["000_7d385fec3d1c01e6.txt"] and rep.added == ["zorblat.txt"]
    assert rep.removed == ["002_0cd934058d5d1ad9.txt"] and len(rep.unchanged) == 2
    # only chunks whose text changed are embedded: the new article and 000's changed tail
    assert 1 <= rep.embedded_chunks <= n_000 + 1
    opened = Index.open(idx)
    assert "zorblat.txt" in opened.docs and "002_0cd934058d5d1ad9.txt" not in opened.docs
    assert any("denied the report" in c.text for c in opened.chunks)


def test_bad_file_is_reported_and_indexed_content_is_kept(corpus, tmp_path):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    (corpus / "000_7d385fec3d1c01e6.txt").write_bytes(b"\xff\xfe\x00\x00garbage")  # corrupted in place
    (corpus / "empty.txt").write_text("")
    rep = build(idx, [corpus])
    assert any("000_7d385fec3d1c01e6.txt" in e and "binary" in e for e in rep.errors)
    assert any("empty.txt: empty file" in e for e in rep.errors)
    opened = Index.open(idx)
    assert "000_7d385fec3d1c01e6.txt" in opened.docs  # the last good version still answers
    assert len(opened.docs) == 4


def test_missing_and_corrupt_index_give_clear_errors(corpus, tmp_path):
    with pytest.raises(RagError, match="no index at .*rag index"):
        Index.open(tmp_path / "nothing")
    idx = tmp_path / "idx"
    build(idx, [corpus])
    (segment,) = (idx / "segments").glob("seg-*")
    (segment / "chunks.jsonl").write_text('{"broken": ')
    with pytest.raises(RagError, match="corrupt.*--rebuild"):
        Index.open(idx)
    build(idx, [corpus], rebuild=True)
    assert len(Index.open(idx).docs) == 4


def exact(idx: Index, doc_id: str) -> bool:
    """The article has passages, and each of their sentences is the slice of its stored text that it points at."""
    raw = idx.raw(doc_id)
    sentences = [s for c in idx.chunks if c.doc_id == doc_id for s in c.sentences]
    return bool(sentences) and all(" ".join(raw[s.start : s.end].split()) == s.text for s in sentences)


def test_a_rebuild_keeps_the_last_version_of_a_file_that_fails_to_load(corpus, tmp_path):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    before = Index.open(idx)
    name = "000_7d385fec3d1c01e6.txt"
    passages = [c.text for c in before.chunks if c.doc_id == name]
    (corpus / name).write_bytes(b"\xff\xfe\x00\x00garbage")  # garbled in place
    rep = build(idx, [corpus], rebuild=True)
    [line] = [e for e in rep.errors if e.startswith(f"{name}: ")]
    assert "binary" in line and "kept the last indexed version" in line
    opened = Index.open(idx)
    assert len(opened.docs) == 4 and name in opened.docs and not rep.removed
    assert [c.text for c in opened.chunks if c.doc_id == name] == passages  # chunked again, from the text it was indexed from
    assert exact(opened, name) and opened.raw(name) == before.raw(name)
    assert rep.embedded_chunks == rep.n_chunks  # a rebuild embeds everything anew


def test_a_rebuild_of_a_corrupt_index_keeps_nothing_of_a_file_that_fails(corpus, tmp_path):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    (segment,) = (idx / "segments").glob("seg-*")
    (segment / "documents.json").write_text('{"broken": ')
    name = "000_7d385fec3d1c01e6.txt"
    (corpus / name).write_bytes(b"\x00binary")
    rep = build(idx, [corpus], rebuild=True)
    assert any(e.startswith(f"{name}: binary") and "kept" not in e for e in rep.errors)
    assert set(Index.open(idx).docs) == {p.name for p in corpus.glob("*.txt")} - {name}


# ---------------------------------------------------------------- a file saved while an update reads it
NAME = "000_7d385fec3d1c01e6.txt"


def saved_after_loading(monkeypatch, path, data: bytes) -> None:
    """The file is saved again right after the loader read it, before the update reads it to chunk."""
    real = plan.load_files

    def load_then_save(*args, **kwargs):
        loaded = real(*args, **kwargs)
        path.write_bytes(data)
        return loaded

    monkeypatch.setattr(plan, "load_files", load_then_save)


def test_a_file_saved_during_an_update_is_indexed_as_saved(corpus, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    f = corpus / NAME
    saved = f.read_text() + "\nHamas later denied the report in a statement on Tuesday.\n"
    f.write_text(f.read_text() + "\nA first draft of a correction.\n")
    saved_after_loading(monkeypatch, f, saved.encode())
    rep = build(idx, [corpus])
    assert rep.updated == [NAME] and not rep.errors
    opened = Index.open(idx)
    assert opened.raw(NAME) == saved and exact(opened, NAME)
    assert "denied the report" in opened.docs[NAME].text and any("denied the report" in c.text for c in opened.chunks)
    assert not any("first draft" in c.text for c in opened.chunks)


def test_a_file_garbled_during_an_update_keeps_its_last_version_and_the_rest_is_indexed(corpus, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    indexed = Index.open(idx).raw(NAME)
    f = corpus / NAME
    f.write_text(indexed + "\nA correction.\n")
    (corpus / "zorblat.txt").write_text(ARTICLE)
    saved_after_loading(monkeypatch, f, b"\x00\x01garbage")
    rep = build(idx, [corpus])
    assert rep.errors == [f"{NAME}: changed while being indexed, and now: binary file, not a text article; kept the last indexed version"]
    assert rep.added == ["zorblat.txt"]
    opened = Index.open(idx)
    assert opened.raw(NAME) == indexed and exact(opened, NAME) and "zorblat.txt" in opened.docs


def test_a_file_that_keeps_changing_is_named_and_keeps_its_last_version(corpus, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    build(idx, [corpus])
    indexed = Index.open(idx).raw(NAME)
    f = corpus / NAME
    f.write_text(indexed + "\nVersion 0 of a live update.\n")
    saves = iter(range(1, 100))
    real = plan.read_text

    def saved_before_each_read(path, max_bytes):
        if path.name == NAME:  # a writer saving the file again just before every read
            path.write_text(indexed + f"\nVersion {next(saves)} of a live update.\n")
        return real(path, max_bytes)

    monkeypatch.setattr(plan, "read_text", saved_before_each_read)
    new = corpus / "new.txt"
    new.write_text(ARTICLE)
    rep = build(idx, [corpus])
    assert rep.errors == [f"{NAME}: kept changing while being indexed (read {plan.READ_TRIES} times); kept the last indexed version"]
    assert next(saves) == plan.READ_TRIES + 1  # a bounded number of reads
    opened = Index.open(idx)
    assert opened.raw(NAME) == indexed and exact(opened, NAME) and "new.txt" in opened.docs
