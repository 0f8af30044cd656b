"""Hybrid retrieval: dense (FAISS) and BM25, reciprocal-rank fusion, near-duplicate collapse."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import embedding
from .corpus import containment, shingles
from .index import Index
from .settings import Settings
from .types import Passage


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def bm25_tokenize(texts: list[str]):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=False)


class HybridRetriever:
    """Dense + BM25 retrieval over an :class:`Index`, fused by reciprocal rank."""

    def __init__(self, index: Index, settings: Settings):
        self.index = index
        self.settings = settings
        self._shingles: dict[str, set[int]] = {}
        self._canonical = self._canonical_chunks()

    def _canonical_chunks(self) -> dict[int, int]:
        """Chunk of a duplicate report -> the matching chunk of the report it repeats."""
        by_doc: dict[str, list[int]] = {}
        for i, c in enumerate(self.index.chunks):
            by_doc.setdefault(c.doc_id, []).append(i)
        out: dict[int, int] = {}
        for doc in self.index.docs.values():
            if not doc.duplicate_of:
                continue
            for i in by_doc.get(doc.id, []):
                sh = self._chunk_shingles(self.index.chunks[i])
                best = max(by_doc.get(doc.duplicate_of, []), key=lambda j: containment(sh, self._chunk_shingles(self.index.chunks[j])), default=None)
                if best is not None and containment(sh, self._chunk_shingles(self.index.chunks[best])) >= self.settings.dup_threshold:
                    out[i] = best
        return out

    def _fold(self, ranking: list[tuple[int, float]], folded: dict[int, set[str]]) -> list[tuple[int, float]]:
        """Replace chunks of duplicate reports by their canonical chunk, so a repeat takes no rank."""
        out, seen = [], set()
        for i, s in ranking:
            j = self._canonical.get(i, i)
            if j != i:
                folded.setdefault(j, set()).add(self.index.chunks[i].doc_id)
            if j not in seen:
                seen.add(j)
                out.append((j, s))
        return out

    def dense(self, qvec: np.ndarray, k: int) -> list[tuple[int, float]]:
        if self.index.vectors.ntotal == 0:
            return []
        scores, ids = self.index.vectors.search(qvec.reshape(1, -1), min(k, self.index.vectors.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def sparse(self, query: str, k: int) -> list[tuple[int, float]]:
        bm = self.index.bm25
        if bm is None:
            return []
        tokens = bm25_tokenize([query])
        words = [w for w, i in sorted(tokens.vocab.items(), key=lambda x: x[1]) if w in bm.vocab_dict]
        if not words:
            return []
        ids, scores = bm.retrieve([words], k=min(k, len(self.index.chunks)), show_progress=False)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def retrieve(self, query: str, top_k: int | None = None) -> list[Passage]:
        """The top passages for ``query``, numbered 1..k; repeats of a passage are folded into it."""
        top_k = top_k or self.settings.top_k
        if not self.index.chunks:
            return []
        qvec = embedding.embed([query])[0]
        folded: dict[int, set[str]] = {}
        dense = self._fold(self.dense(qvec, self.settings.candidates), folded)
        sparse = self._fold(self.sparse(query, self.settings.candidates), folded)
        cos = {i: s for i, s in dense}
        fused: dict[int, float] = {}
        for ranking in (dense, sparse):
            for rank, (i, _) in enumerate(ranking):
                fused[i] = fused.get(i, 0.0) + 1.0 / (self.settings.rrf_k + rank + 1)
        order = sorted(fused, key=lambda i: -fused[i])
        missing = [i for i in order if i not in cos]
        if missing:  # cosine of BM25-only hits, for the relevance gate downstream
            vecs = np.stack([self.index.vectors.reconstruct(i) for i in missing])
            cos.update(zip(missing, (vecs @ qvec).tolist()))
        passages: list[Passage] = []
        for i in order:
            chunk = self.index.chunks[i]
            doc = self.index.docs[chunk.doc_id]
            dup = self._duplicate_of(chunk, passages)
            if dup is not None:
                if doc.id != dup.doc.id and doc.id not in dup.also_reported_by:
                    dup.also_reported_by.append(doc.id)
                continue
            if len(passages) >= top_k:
                break
            passages.append(Passage(n=len(passages) + 1, chunk=chunk, score=cos[i], doc=doc, also_reported_by=sorted(folded.get(i, ()))))
        return passages

    def _duplicate_of(self, chunk, passages: list[Passage]) -> Passage | None:
        sh = self._chunk_shingles(chunk)
        for p in passages:
            if containment(sh, self._chunk_shingles(p.chunk)) >= self.settings.dup_threshold:
                return p
        return None

    def _chunk_shingles(self, chunk) -> set[int]:
        if chunk.id not in self._shingles:
            self._shingles[chunk.id] = shingles(chunk.text)
        return self._shingles[chunk.id]

    def as_llama_retriever(self):
        """This retriever as a llama-index ``BaseRetriever`` returning TextNodes with char offsets."""
        from llama_index.core.retrievers import BaseRetriever
        from llama_index.core.schema import NodeWithScore, TextNode

        hybrid = self

        class LlamaHybridRetriever(BaseRetriever):
            def _retrieve(self, query_bundle):
                return [
                    NodeWithScore(
                        node=TextNode(
                            id_=p.chunk.id,
                            text=p.chunk.text,
                            start_char_idx=p.chunk.start,
                            end_char_idx=p.chunk.end,
                            metadata={"source_file": p.doc.id, "title": p.doc.title, "outlet": p.doc.outlet, "date": p.doc.date},
                        ),
                        score=p.score,
                    )
                    for p in hybrid.retrieve(query_bundle.query_str)
                ]

        return LlamaHybridRetriever()
