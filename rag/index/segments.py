"""Immutable index segments: the articles of one write, their passages, vectors and BM25 postings.

A write adds one segment (or merges a few small ones into one) and publishes a generation that
lists the live segments and the articles deleted from each; segments it does not touch are
shared by reference, never copied. Layout of a segment folder::

    segments/seg-000012/
      meta.json        the articles in order, and each one's passage and vector counts
      documents.json   the articles (rag.types.Document)
      raw.jsonl        each article's file text, one line per article, in order
      chunks.jsonl     the passages, article by article, in order
      vectors.npy      float32 rows: the first passages of each article (Settings.dense_chunks_per_article)
      terms.npz        BM25 postings (term -> passages and counts) and each passage's length
      vocab.json       term -> column of terms.npz
      samples.npz      a sample of each article's shingles: candidates for near-duplicate reports
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..ingest.dedup import sample, shingles
from ..text import bm25_tokenize
from ..types import Chunk, Document, Sentence
from . import embedding

SEGMENTS_DIR = "segments"
SEGMENT_NAME = re.compile(r"seg-\d{6,}")
# bm25s's defaults (its Lucene variant), so that one segment scores exactly as a bm25s index of it would
K1, B = 1.5, 0.75


@dataclass
class Terms:
    """One segment's BM25 postings: raw term counts per passage, so scores use the whole index's statistics.

    bm25s bakes each term's IDF into its index when it is built; an index of many segments needs
    document frequencies summed over the live passages of all of them at query time (as Lucene
    does), so the counts are kept and scored here.
    """

    vocab: dict[str, int]
    indptr: np.ndarray  # term column c holds the postings rows[indptr[c]:indptr[c + 1]]
    rows: np.ndarray  # passage (row within the segment) of each posting
    tf: np.ndarray  # float32 count of the term in that passage
    lengths: np.ndarray  # tokens per passage

    @classmethod
    def of(cls, texts: Sequence[str]) -> Terms:
        """The postings of ``texts`` as ``bm25_tokenize`` cuts them."""
        import scipy.sparse as sp

        if not texts:
            return cls({}, np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int32))
        tok = bm25_tokenize(list(texts))
        lengths = np.fromiter((len(ids) for ids in tok.ids), np.int32, len(tok.ids))
        cols = np.concatenate([np.asarray(ids, np.int64) for ids in tok.ids]) if lengths.sum() else np.zeros(0, np.int64)
        rows = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
        m = sp.csc_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(lengths), len(tok.vocab)))
        m.sum_duplicates()
        return cls(dict(tok.vocab), m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32), lengths)

    def save(self, folder: Path) -> None:
        np.savez(folder / "terms.npz", indptr=self.indptr, rows=self.rows, tf=self.tf, lengths=self.lengths)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> Terms:
        with np.load(folder / "terms.npz") as z:
            arrays = {k: z[k] for k in ("indptr", "rows", "tf", "lengths")}
        return cls(json.loads((folder / "vocab.json").read_text(encoding="utf-8")), **arrays)


class SegmentedBM25:
    """BM25 over the live passages of several segments, scored as one bm25s index of them all would be.

    ``parts``: each segment's postings with the global passage number of each of its rows (-1 for
    a passage of a deleted article). The arithmetic follows bm25s's Lucene variant in float32, so
    an index of one segment ranks exactly as bm25s did.
    """

    def __init__(self, parts: Sequence[tuple[Terms, np.ndarray]]) -> None:
        self.parts = [(t, where) for t, where in parts if (where >= 0).any()]
        self.n = int(sum((where >= 0).sum() for _, where in self.parts))
        total = sum(int(t.lengths[where >= 0].sum()) for t, where in self.parts)
        avgdl = total / self.n if self.n else 1.0
        # per passage, bm25s's k1 * (1 - b + b * dl / avgdl); like bm25s, a term's score is worked out
        # in float64 from a float32 IDF, and stored (here: added) as float32
        self._norms = [K1 * ((1 - B) + B * t.lengths.astype(np.float64) / avgdl) for t, _ in self.parts]
        self.vocab_dict = _Vocabulary([t.vocab for t, _ in self.parts])

    def get_scores(self, words: Sequence[str]) -> np.ndarray:
        """Each passage's BM25 score for the query terms ``words`` (summed in their order)."""
        scores = np.zeros(self.n, np.float32)
        for w in words:
            hits = []
            for (terms, where), norm in zip(self.parts, self._norms):
                col = terms.vocab.get(w)
                if col is None:
                    continue
                lo, hi = terms.indptr[col], terms.indptr[col + 1]
                rows = terms.rows[lo:hi]
                at = where[rows]
                live = at >= 0
                hits.append((at[live], terms.tf[lo:hi][live], norm[rows[live]]))
            df = sum(len(at) for at, _, _ in hits)
            if not df:
                continue
            idf = np.float64(np.float32(math.log(1 + (self.n - df + 0.5) / (df + 0.5))))
            for at, tf, norm in hits:
                tf = tf.astype(np.float64)
                scores[at] += (idf * (tf / (norm + tf))).astype(np.float32)
        return scores


class _Vocabulary:
    """The terms of any segment: what ``w in bm25.vocab_dict`` asks."""

    def __init__(self, vocabs: list[dict[str, int]]) -> None:
        self._vocabs = vocabs

    def __contains__(self, word: object) -> bool:
        return any(word in v for v in self._vocabs)


# ---------------------------------------------------------------- one segment on disk
@dataclass(frozen=True)
class SegmentMeta:
    """``meta.json``: the segment's articles in order, and how many passages and vectors each has."""

    docs: list[str]
    chunks: list[int]
    dense: list[int]

    @property
    def n_chunks(self) -> int:
        return sum(self.chunks)

    def chunk_range(self) -> dict[str, tuple[int, int]]:
        """Article -> its passages' rows (start, stop) in the segment."""
        return _ranges(self.docs, self.chunks)

    def dense_range(self) -> dict[str, tuple[int, int]]:
        """Article -> its vectors' rows (start, stop) in the segment."""
        return _ranges(self.docs, self.dense)


def _ranges(docs: list[str], counts: list[int]) -> dict[str, tuple[int, int]]:
    """Each article's rows (start, stop) when the articles' rows follow one another in order."""
    stops = np.cumsum(counts, dtype=np.int64).tolist()
    return {d: (stop - n, stop) for d, n, stop in zip(docs, counts, stops)}


@dataclass
class SegmentData:
    """What one segment holds, in memory: articles in id order, each one's passages and vectors."""

    docs: list[Document]
    raws: dict[str, str]
    chunks: dict[str, list[Chunk]]
    vectors: dict[str, np.ndarray]  # article -> its passages' vectors (its first ones), rows in order
    texts: dict[str, list[str]]  # article -> the embedded (and BM25-indexed) text of each passage


def write(folder: Path, data: SegmentData, fault: Callable[[], None] | None = None) -> SegmentMeta:
    """Write a complete segment into ``folder`` (a fresh temporary folder); the caller renames it into place.

    ``fault``: called just before the segment is complete (the crash tests' hook).
    """
    docs = sorted(data.docs, key=lambda d: d.id)
    meta = SegmentMeta([d.id for d in docs], [len(data.chunks[d.id]) for d in docs], [len(data.vectors[d.id]) for d in docs])
    (folder / "documents.json").write_text(json.dumps([asdict(d) for d in docs], ensure_ascii=False), encoding="utf-8")
    with open(folder / "raw.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "raw": data.raws[d.id]}, ensure_ascii=False) + "\n")
    with open(folder / "chunks.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            for c in data.chunks[d.id]:
                f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
    rows = [data.vectors[d.id] for d in docs if len(data.vectors[d.id])]
    matrix = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)
    np.save(folder / "vectors.npy", matrix)
    Terms.of([t for d in docs for t in data.texts[d.id]]).save(folder)
    doc_of, hashes = [], []
    for k, d in enumerate(docs):
        s = sorted(sample(shingles(d.text)))
        doc_of.extend([k] * len(s))
        hashes.extend(s)
    np.savez(folder / "samples.npz", doc=np.asarray(doc_of, np.int32), hash=np.asarray(hashes, np.int64))
    if fault is not None:
        fault()
    # meta.json last: a segment without one is incomplete
    (folder / "meta.json").write_text(json.dumps(asdict(meta)), encoding="utf-8")
    for p in folder.iterdir():
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    return meta


def read_meta(folder: Path) -> SegmentMeta:
    data = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return SegmentMeta(list(data["docs"]), [int(n) for n in data["chunks"]], [int(n) for n in data["dense"]])


def read_documents(folder: Path) -> list[Document]:
    return [Document(**{**d, "segments": [tuple(s) for s in d["segments"]]}) for d in json.loads((folder / "documents.json").read_text(encoding="utf-8"))]


def read_chunks(folder: Path, rows: set[int] | None = None) -> Iterator[tuple[int, Chunk]]:
    """The segment's passages (only those at ``rows`` when given: the others are not parsed)."""
    with open(folder / "chunks.jsonl", encoding="utf-8") as f:
        for r, line in enumerate(f):
            if rows is None or r in rows:
                c = json.loads(line)
                c["sentences"] = [Sentence(**s) for s in c["sentences"]]
                yield r, Chunk(**c)


def read_raws(folder: Path, ids: set[str] | None = None) -> dict[str, str]:
    """Article -> file text (only the articles ``ids`` when given: the other lines are not parsed)."""
    # each line starts with its article's id as `write` puts it, so a line is picked without parsing it
    heads = None if ids is None else tuple('{"id": ' + json.dumps(i, ensure_ascii=False) + "," for i in ids)
    out: dict[str, str] = {}
    with open(folder / "raw.jsonl", encoding="utf-8") as f:
        for line in f:
            if heads is None or line.startswith(heads):
                d = json.loads(line)
                out[d["id"]] = d["raw"]
    return out


def read_vectors(folder: Path, mmap: bool = False) -> np.ndarray:
    return np.load(folder / "vectors.npy", mmap_mode="r" if mmap else None)


def read_samples(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(article position in meta.docs, shingle hash) pairs of the segment's near-duplicate samples."""
    with np.load(folder / "samples.npz") as z:
        return z["doc"], z["hash"]


def next_name(root: Path) -> str:
    """A segment name past every one on disk (an orphan a killed writer left included)."""
    folder = root / SEGMENTS_DIR
    numbers = [int(p.name[4:]) for p in folder.glob("seg-*") if SEGMENT_NAME.fullmatch(p.name)] if folder.is_dir() else []
    return f"seg-{max(numbers, default=0) + 1:06d}"


def remove_unlisted(root: Path, keep: set[str]) -> None:
    """Delete the segments no kept generation lists, and temporary folders of killed writers."""
    folder = root / SEGMENTS_DIR
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if (SEGMENT_NAME.fullmatch(p.name) and p.name not in keep) or p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
