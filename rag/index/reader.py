"""Opening an index generation for reading: its articles, passages, vectors and BM25 postings, checked as they load."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Chunk, Document, RagError
from . import embedding, segments
from .layout import FORMAT_VERSION, Manifest, SegmentRef, current_name, rebuild_hint

if TYPE_CHECKING:  # imported where used: it loads slowly, and many commands never open an index
    import faiss


class Index:
    """An opened index generation: documents, chunks, their vectors and the BM25 model."""

    def __init__(
        self,
        root: Path,
        gen: Path,
        manifest: Manifest,
        docs: dict[str, Document],
        chunks: list[Chunk],
        vectors: faiss.IndexFlatIP,
        dense_ids: np.ndarray,
        bm25: segments.SegmentedBM25 | None,
        raw: dict[str, str],
        vector_blocks: list[tuple[str, np.ndarray]] | None = None,
    ) -> None:
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
        # per live segment, in row order: its name and which of its vector rows this generation keeps (rag.index.ann)
        self.vector_blocks = vector_blocks or []

    # ------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | Path) -> Index:
        """Open the live generation of the index at ``root``; raises RagError if missing or corrupt."""
        import faiss

        root = Path(root)
        gen = root / current_name(root)
        fix = rebuild_hint(root)
        part = gen / "manifest.json"  # the file being read, named when it turns out damaged
        try:
            manifest = Manifest.from_json(json.loads(part.read_text(encoding="utf-8")))
            if manifest.format_version != FORMAT_VERSION:
                raise RagError(f"index at {root}/ has format {manifest.format_version}, this version reads {FORMAT_VERSION}: {fix}")
            parts = [_Segment.read(root, ref) for ref in manifest.segments]
        except RagError:
            raise
        except _Damaged as exc:
            raise RagError(f"index file {exc.part} is corrupt ({exc.reason}); {fix}") from exc
        except Exception as exc:  # any unreadable or truncated file
            raise RagError(f"index file {part} is corrupt ({type(exc).__name__}: {exc}); {fix}") from exc
        docs: dict[str, Document] = {}
        raw: dict[str, str] = {}
        chunks: list[Chunk] = []
        dense_ids: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        terms = []
        blocks: list[tuple[str, np.ndarray]] = []
        for ref, p in zip(manifest.segments, parts):  # the live passages of each segment, numbered on from the ones before
            at = np.full(len(p.chunks), -1, np.int64)
            live = np.flatnonzero(p.live)
            at[live] = np.arange(len(chunks), len(chunks) + len(live))
            chunks.extend(p.chunks[i] for i in live)
            docs.update((d.id, d) for d in p.docs if d.id not in p.deleted)
            raw.update((k, v) for k, v in p.raws.items() if k not in p.deleted)
            kept = at[p.dense_rows] >= 0
            dense_ids.append(at[p.dense_rows][kept])
            rows.append(p.vectors[kept])
            blocks.append((ref.name, np.flatnonzero(kept)))
            terms.append((p.terms, at))
        vectors = faiss.IndexFlatIP(embedding.EMBEDDER_DIM)
        matrix = np.concatenate(rows) if rows else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)
        if len(matrix):
            vectors.add(np.ascontiguousarray(matrix, dtype=np.float32))
        ids = np.concatenate(dense_ids) if dense_ids else np.zeros(0, np.int64)
        if manifest.n_chunks != len(chunks) or set(raw) != set(docs):
            raise RagError(f"index at {gen}/ is corrupt (its manifest and segments disagree); {fix}")
        bm25 = segments.SegmentedBM25(terms) if chunks else None
        return cls(root, gen, manifest, docs, chunks, vectors, ids, bm25, raw, blocks)

    def raw(self, doc_id: str) -> str:
        """The article's file text as it was indexed; citation offsets point into it.

        Kept inside the index, so quotes stay exact even if the file is edited or deleted
        before the next `rag index`.
        """
        return self._raw[doc_id]

    @cached_property
    def chunk_counts(self) -> dict[str, int]:
        """The number of chunks of each indexed article (a generation never changes, so counted once)."""
        counts = dict.fromkeys(self.docs, 0)
        for c in self.chunks:
            counts[c.doc_id] += 1
        return counts

    def vector_matrix(self) -> np.ndarray:
        """Row r is the vector of chunk ``dense_ids[r]``."""
        n = self.vectors.ntotal
        return self.vectors.reconstruct_n(0, n) if n else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)


class _Damaged(Exception):
    """A segment file that cannot be read, or that disagrees with the segment's meta.json."""

    def __init__(self, part: Path, reason: str) -> None:
        super().__init__(reason)
        self.part, self.reason = part, reason


@dataclass
class _Segment:
    """One live segment as :meth:`Index.open` reads it whole."""

    docs: list[Document]
    deleted: set[str]
    raws: dict[str, str]
    chunks: list[Chunk]
    live: np.ndarray  # per passage: its article is not deleted
    dense_rows: np.ndarray  # the passage of each vector row
    vectors: np.ndarray
    terms: segments.Terms

    @classmethod
    def read(cls, root: Path, ref: SegmentRef) -> _Segment:
        folder = root / segments.SEGMENTS_DIR / ref.name
        read = {
            "meta.json": segments.read_meta,
            "documents.json": segments.read_documents,
            "chunks.jsonl": lambda f: [c for _, c in segments.read_chunks(f)],
            "raw.jsonl": segments.read_raws,
            "vectors.npy": segments.read_vectors,
            "terms.npz": segments.Terms.load,
        }
        got: dict[str, Any] = {}
        for name, how in read.items():
            try:
                got[name] = how(folder)
            except Exception as exc:  # any unreadable or truncated file
                raise _Damaged(folder / name, f"{type(exc).__name__}: {exc}") from exc
        meta, docs, chunks = got["meta.json"], got["documents.json"], got["chunks.jsonl"]
        vectors, terms = got["vectors.npy"], got["terms.npz"]
        if [d.id for d in docs] != meta.docs or set(got["raw.jsonl"]) != set(meta.docs):
            raise _Damaged(folder / "documents.json", "its articles are not those of meta.json")
        if len(chunks) != meta.n_chunks or len(terms.lengths) != meta.n_chunks:
            raise _Damaged(folder / "chunks.jsonl", "its passages are not those of meta.json")
        if vectors.ndim != 2 or vectors.shape != (sum(meta.dense), embedding.EMBEDDER_DIM):
            raise _Damaged(folder / "vectors.npy", f"{vectors.shape} vectors where meta.json counts {sum(meta.dense)}")
        deleted = set(ref.deleted)
        live = np.ones(len(chunks), bool)
        dense_rows: list[int] = []
        for doc_id, (start, stop), n in zip(meta.docs, meta.chunk_range().values(), meta.dense):
            live[start:stop] = doc_id not in deleted
            dense_rows.extend(range(start, start + n))
        return cls(docs, deleted, got["raw.jsonl"], chunks, live, np.asarray(dense_rows, np.int64), vectors, terms)
