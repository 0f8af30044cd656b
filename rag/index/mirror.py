"""What a store mirroring the index keeps of it, whichever engine: point keys, BM25 term ids and weights, the collection's name.

Shared by the Milvus and Qdrant stores (:mod:`rag.index.milvus`, :mod:`rag.index.store`), so both rank
with the index's own BM25 formula and key a passage by the text embedded and how."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

from ..text import bm25_tokenize
from . import segments
from .embedding import embed_text
from .reader import Index

# The index's own BM25 parameters (rag.index.segments.K1, B): Qdrant's IDF modifier and the IDF the Milvus query carries are Lucene's idf, the very
# one the index scores with, so with these term weights the two score a passage the same.
BM25_K1, BM25_B = segments.K1, segments.B


def term_id(word: str) -> int:
    """A stable 32-bit id for a BM25 term (Qdrant's sparse indices are u32), the same in every process and index.

    A hash rather than a vocabulary: the collection then needs no shared word list, and a word first seen
    in a new article needs no renumbering. Two words sharing an id (about one pair per 100k words squared
    over 2^33) only merge two rare terms' counts.
    """
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=4).digest(), "little")


def term_weights(texts: list[str]) -> tuple[list[dict[int, float]], list[int]]:
    """Per text, term id -> raw count, and each text's length in BM25 tokens (stopwords out, stemmed)."""
    tokens = bm25_tokenize(texts)
    words = {i: w for w, i in tokens.vocab.items()}
    counts: list[dict[int, float]] = []
    for ids in tokens.ids:
        c: dict[int, float] = {}
        for i in ids:
            t = term_id(words[i])
            c[t] = c.get(t, 0.0) + 1.0
        counts.append(c)
    return counts, [len(ids) for ids in tokens.ids]


def bm25_vector(counts: dict[int, float], length: int, avgdl: float) -> tuple[list[int], list[float]]:
    """A passage's BM25 term part ``tf / (tf + k1 (1 - b + b len/avgdl))``; the store multiplies in the IDF."""
    norm = BM25_K1 * (1 - BM25_B + BM25_B * length / avgdl)
    ids = sorted(counts)
    return ids, [counts[t] / (counts[t] + norm) for t in ids]


def query_terms(query: str) -> list[int]:
    """The query's BM25 term ids, each once (bm25s scores a query's distinct words)."""
    tokens = bm25_tokenize([query])
    return sorted({term_id(w) for w in tokens.vocab if w})


def collection_name(root: Path) -> str:
    """The server-side collection of the index at ``root``: its folder name and a hash of its full path."""
    path = str(root.resolve())
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", root.resolve().name).strip("-") or "index"
    return f"newsrag-{slug}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def point_keys(index: Index) -> dict[str, int]:
    """Point id -> chunk index: a chunk's id, the text embedded and BM25-indexed, and how it was embedded."""
    m = index.manifest
    how = f"{m.embedder}|{m.precision}|{m.dim}"
    out: dict[str, int] = {}
    for i, c in enumerate(index.chunks):
        text = embed_text(c, index.docs[c.doc_id])
        key = f"{c.id}\0{text}\0{how if i in index.row_of else 'bm25 only'}"
        out[str(uuid.UUID(bytes=hashlib.sha1(key.encode("utf-8")).digest()[:16]))] = i
    return out
