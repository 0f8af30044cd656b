"""Build, persist, open and incrementally update the index (FAISS vectors + BM25 + chunk store).

Layout of an index folder::

    index/
      CURRENT          name of the live generation, replaced atomically
      gen-000007/      manifest.json, documents.json, chunks.jsonl, raw.jsonl, vectors.faiss, dense_ids.npy, bm25/
      .lock            held by the one writer

A write builds a complete new generation beside the live one and then swaps ``CURRENT``
with ``os.replace``: a reader, or a crash at any point, sees the old index or the new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import embedding
from .chunking import chunk_document
from .corpus import iter_article_files, load_documents, mark_duplicates, read_text
from .settings import Settings
from .text import bm25_tokenize
from .types import Chunk, Document, RagError, Sentence

FORMAT_VERSION = 3


def embed_text(chunk: Chunk, doc: Document) -> str:
    """What is embedded and BM25-indexed for a chunk: the article's title and date give it context."""
    head = " — ".join(x for x in (doc.title, doc.date) if x)
    return f"{head}\n{chunk.text}" if head else chunk.text


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    embedded_chunks: int = 0
    n_chunks: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{len(self.unchanged)} unchanged; {self.n_chunks} chunks ({self.embedded_chunks} embedded) "
            f"in {self.seconds:.1f}s"
        )


class Index:
    """An opened index generation: documents, chunks, their vectors and the BM25 model."""

    def __init__(
        self,
        root: Path,
        gen: Path,
        manifest: dict,
        docs: dict[str, Document],
        chunks: list[Chunk],
        vectors,
        dense_ids: np.ndarray,
        bm25,
        raw: dict[str, str],
    ):
        self.root = root
        self.gen = gen
        self.manifest = manifest
        self.docs = docs
        self.chunks = chunks
        self.vectors = vectors  # faiss.IndexFlatIP, row r = chunks[dense_ids[r]]
        self.dense_ids = dense_ids
        self.row_of = {int(c): r for r, c in enumerate(dense_ids)}  # chunk index -> vector row
        self.bm25 = bm25
        self._raw = raw  # loaded at open: a reader never depends on files a later writer removes

    # ------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | Path) -> Index:
        """Open the live generation of the index at ``root``; raises RagError if missing or corrupt."""
        import bm25s
        import faiss

        root = Path(root)
        cur = root / "CURRENT"
        if not cur.is_file():
            raise RagError(f"no index at {root}/: build one with `rag index seeds/`")
        gen = root / cur.read_text().strip()
        try:
            manifest = json.loads((gen / "manifest.json").read_text())
            if manifest.get("format_version") != FORMAT_VERSION:
                raise RagError(
                    f"index at {root}/ has format {manifest.get('format_version')}, this version reads {FORMAT_VERSION}: "
                    "run `rag index --rebuild`"
                )
            docs = {
                d["id"]: Document(**{**d, "segments": [tuple(s) for s in d["segments"]]})
                for d in json.loads((gen / "documents.json").read_text())
            }
            chunks = []
            with open(gen / "chunks.jsonl", encoding="utf-8") as f:
                for line in f:
                    c = json.loads(line)
                    c["sentences"] = [Sentence(**s) for s in c["sentences"]]
                    chunks.append(Chunk(**c))
            vectors = faiss.read_index(str(gen / "vectors.faiss"))
            dense_ids = np.load(gen / "dense_ids.npy")
            raw: dict[str, str] = {}
            with open(gen / "raw.jsonl", encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    raw[d["id"]] = d["raw"]
            bm25 = bm25s.BM25.load(str(gen / "bm25")) if chunks else None
        except RagError:
            raise
        except Exception as exc:  # any unreadable or truncated file
            raise RagError(f"index at {root}/ is corrupt ({type(exc).__name__}: {exc}); rebuild it with `rag index --rebuild`") from exc
        if (
            vectors.ntotal != len(dense_ids)
            or manifest.get("n_chunks") != len(chunks)
            or (len(dense_ids) and int(dense_ids.max()) >= len(chunks))
        ):
            raise RagError(f"index at {root}/ is corrupt (vectors and chunks disagree); rebuild it with `rag index --rebuild`")
        if set(raw) != set(docs):
            raise RagError(f"index at {root}/ is corrupt (article texts missing); rebuild it with `rag index --rebuild`")
        return cls(root, gen, manifest, docs, chunks, vectors, dense_ids, bm25, raw)

    def raw(self, doc_id: str) -> str:
        """The article's file text as it was indexed; citation offsets point into it.

        Kept inside the index, so quotes stay exact even if the file is edited or deleted
        before the next `rag index`.
        """
        return self._raw[doc_id]

    def vector_matrix(self) -> np.ndarray:
        """Row r is the vector of chunk ``dense_ids[r]``."""
        n = self.vectors.ntotal
        return self.vectors.reconstruct_n(0, n) if n else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)


# ---------------------------------------------------------------- writing
@contextmanager
def writer_lock(root: Path):
    """Hold the index's write lock; a second writer gets a clear error instead of waiting forever."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RagError(f"another process is updating the index at {root}/; try again when it finishes") from exc
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _settings_key(settings: Settings) -> dict:
    return {
        "embedder": embedding.EMBEDDER_ID,
        "precision": embedding.precision(),
        "dim": embedding.EMBEDDER_DIM,
        "chunker": {"kind": "sentences", "chunk_chars": settings.chunk_chars, "overlap_sentences": settings.chunk_overlap_sentences},
    }


def build(
    root: str | Path,
    paths: Iterable[str | Path] | None = None,
    settings: Settings | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> UpdateReport:
    """Sync: make the index at ``root`` mirror the articles under ``paths``, embedding only what changed.

    With ``paths`` None the sources recorded by the last build are used. Files that cannot be
    read are reported in ``errors`` and, if an earlier version was indexed, that version is kept.
    """
    return update(root, settings, sync=paths, rebuild=rebuild, progress=progress)


def add(root: str | Path, paths: Iterable[str | Path], settings: Settings | None = None, progress: bool = False) -> UpdateReport:
    """Add (or refresh) the articles under ``paths``; everything already indexed stays."""
    return update(root, settings, add=list(paths), progress=progress)


def remove(root: str | Path, doc_ids: Iterable[str], settings: Settings | None = None) -> UpdateReport:
    """Drop documents by id (file name) from the index; nothing is re-embedded."""
    return update(root, settings, remove=list(doc_ids))


def update(
    root: str | Path,
    settings: Settings | None = None,
    *,
    sync: Iterable[str | Path] | None = None,
    add: Iterable[str | Path] | None = None,
    remove: Iterable[str] | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> UpdateReport:
    """The one write path behind sync, add and remove: publish a new generation atomically."""
    settings = settings or Settings.from_env()
    root = Path(root)
    t0 = time.perf_counter()
    with writer_lock(root):
        old: Index | None = None
        if (root / "CURRENT").exists() and not rebuild and _recorded_format(root) == FORMAT_VERSION:
            old = Index.open(root)  # another format is simply rebuilt; a corrupt index raises
            if {k: old.manifest.get(k) for k in ("embedder", "precision", "dim", "chunker")} != _settings_key(settings):
                old = None  # a different embedder or chunker: everything is re-embedded
        old_docs = old.docs if old else {}
        sources: list[str] = list((old.manifest if old else _recorded_manifest(root)).get("sources") or [])
        report = UpdateReport()
        if remove is not None:
            unknown = sorted(set(remove) - set(old_docs))
            if unknown:
                raise RagError(f"not in the index: {', '.join(unknown)} (`rag list` shows what is)")
            new_docs = {k: v for k, v in old_docs.items() if k not in set(remove)}
        else:
            paths = add if add is not None else sync if sync is not None else sources
            if not paths:
                raise RagError("no articles given: name a folder or files, e.g. `rag index seeds/`")
            paths = [str(Path(p).resolve()) for p in paths]
            n_files = len(iter_article_files(paths)[0])
            if n_files > settings.max_files_per_add:
                raise RagError(f"{n_files:,} files given; at most {settings.max_files_per_add:,} per update (RAG_MAX_FILES_PER_ADD)")
            loaded = load_documents(paths, settings.max_file_bytes, mark=False)  # marked below, with the kept ones
            report.errors = loaded.errors
            if add is not None:
                new_docs = {**old_docs, **{d.id: d for d in loaded.documents}}
                sources += [p for p in paths if p not in sources]
            else:
                new_docs = {d.id: d for d in loaded.documents}
                sources = paths
                # keep the indexed version of a file that exists but could not be read now
                failed = {e.split(":", 1)[0] for e in loaded.errors}
                for doc_id, d in old_docs.items():
                    if doc_id not in new_docs and doc_id in failed and Path(d.path).exists():
                        new_docs[doc_id] = d

        cache: dict[str, np.ndarray] = {}
        old_by_doc: dict[str, list[int]] = {}
        if old:
            old_vecs = old.vector_matrix()
            for i, c in enumerate(old.chunks):
                old_by_doc.setdefault(c.doc_id, []).append(i)
            for r, i in enumerate(old.dense_ids):
                c = old.chunks[int(i)]
                cache[_key(embed_text(c, old.docs[c.doc_id]))] = old_vecs[r]

        mark_duplicates(list(new_docs.values()))
        raws: dict[str, str] = {}
        chunks: list[Chunk] = []
        texts: list[str] = []
        for doc_id in sorted(new_docs):
            d = new_docs[doc_id]
            prev = old_docs.get(doc_id)
            if prev is not None and prev.content_hash == d.content_hash and doc_id in old_by_doc:
                report.unchanged.append(doc_id)
                doc_chunks = [old.chunks[i] for i in old_by_doc[doc_id]]
                raws[doc_id] = old.raw(doc_id)
            else:
                (report.updated if prev is not None else report.added).append(doc_id)
                raws[doc_id] = read_text(Path(d.path), settings.max_file_bytes)
                doc_chunks = chunk_document(d, raws[doc_id], settings.chunk_chars, settings.chunk_overlap_sentences)
            chunks.extend(doc_chunks)
            texts.extend(embed_text(c, d) for c in doc_chunks)
        report.removed = sorted(set(old_docs) - set(new_docs))
        report.n_chunks = len(chunks)
        limit = settings.dense_chunks_per_article
        if (
            old is not None
            and not (report.added or report.updated or report.removed)
            and old.manifest.get("dense_chunks_per_article") == limit
            and all(asdict(new_docs[i]) == asdict(old_docs[i]) for i in new_docs)
        ):
            report.seconds = time.perf_counter() - t0
            return report  # nothing changed: no new generation

        # Dense vectors for the first ``limit`` passages of each article, BM25 for all of them: news
        # states its facts first, and a long page's tail (live blogs, archives, link lists) costs
        # embedding time out of proportion to what it adds; keywords still find it (README, RealTime QA).
        per_doc: dict[str, int] = {}  # chunks seen so far per article; at the end, its chunk count
        dense_ids: list[int] = []
        for i, c in enumerate(chunks):
            if limit <= 0 or per_doc.get(c.doc_id, 0) < limit:
                dense_ids.append(i)
            per_doc[c.doc_id] = per_doc.get(c.doc_id, 0) + 1
        todo = [i for i in dense_ids if _key(texts[i]) not in cache]
        if todo:
            vecs = embedding.embed([texts[i] for i in todo], progress=progress)
            for i, v in zip(todo, vecs):
                cache[_key(texts[i])] = v
        report.embedded_chunks = len(todo)
        matrix = np.stack([cache[_key(texts[i])] for i in dense_ids]) if dense_ids else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)
        fault_point("after_embed")

        manifest = {
            "format_version": FORMAT_VERSION,
            **_settings_key(settings),
            "sources": sources,
            "n_chunks": len(chunks),
            "dense_chunks_per_article": limit,
            "n_dense": len(dense_ids),
            "documents": {
                d.id: {"content_hash": d.content_hash, "path": d.path, "n_chunks": per_doc.get(d.id, 0)}
                for d in new_docs.values()
            },
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_generation(root, manifest, list(new_docs.values()), raws, chunks, matrix, np.asarray(dense_ids, dtype=np.int64), texts)
        report.seconds = time.perf_counter() - t0
        return report


def fault_point(name: str) -> None:
    """Crash-test hook: ``RAG_FAULT=<name>`` kills the process here, as a power cut would."""
    if os.environ.get("RAG_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _recorded_manifest(root: Path) -> dict:
    """The live manifest, read leniently so a damaged or older index can still be rebuilt."""
    try:
        gen = root / (root / "CURRENT").read_text().strip()
        return json.loads((gen / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _recorded_format(root: Path) -> int | None:
    return _recorded_manifest(root).get("format_version")


def _write_generation(
    root: Path,
    manifest: dict,
    docs: list[Document],
    raws: dict[str, str],
    chunks: list[Chunk],
    matrix: np.ndarray,
    dense_ids: np.ndarray,
    texts: list[str],
) -> None:
    import bm25s
    import faiss

    cur = root / "CURRENT"
    prev = cur.read_text().strip() if cur.exists() else None
    # past every generation on disk: one a killed writer published but never made current is an orphan
    n = max([int(g.name.split("-")[1]) for g in root.glob("gen-*") if g.name.split("-")[1].isdigit()], default=0) + 1
    name = f"gen-{n:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "documents.json").write_text(json.dumps([asdict(d) for d in sorted(docs, key=lambda d: d.id)], ensure_ascii=False))
    with open(tmp / "raw.jsonl", "w", encoding="utf-8") as f:
        for doc_id in sorted(raws):
            f.write(json.dumps({"id": doc_id, "raw": raws[doc_id]}, ensure_ascii=False) + "\n")
    with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
    vi = faiss.IndexFlatIP(embedding.EMBEDDER_DIM)
    if len(matrix):
        vi.add(np.ascontiguousarray(matrix, dtype=np.float32))
    faiss.write_index(vi, str(tmp / "vectors.faiss"))
    np.save(tmp / "dense_ids.npy", dense_ids)
    if texts:
        bm = bm25s.BM25()
        bm.index(bm25_tokenize(texts), show_progress=False)
        bm.save(str(tmp / "bm25"))
    # the manifest goes last: a generation without one is incomplete
    fault_point("during_write")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    fault_point("before_swap")
    tmp_cur = root / f".CURRENT.{os.getpid()}"
    tmp_cur.write_text(name)
    with open(tmp_cur, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp_cur, cur)
    # older generations are garbage once CURRENT moved; keep the previous one for readers mid-open
    for old in sorted(root.glob("gen-*")):
        if old.name not in (name, prev):
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
