"""Hybrid retrieval: dense (FAISS) and BM25, reciprocal-rank fusion, near-duplicate collapse."""

from __future__ import annotations

import functools
from datetime import date
from typing import TYPE_CHECKING

import numpy as np

from ..dates import NO_DAY, ArticleDates, DateRange
from ..ingest.dedup import containment, shingles
from ..settings import Settings
from ..text import bm25_tokenize
from ..types import Chunk, Passage, RagError
from . import embedding
from .ann import best, open_ivf
from .embedding import embed_text
from .reader import Index
from .store import open_store

if TYPE_CHECKING:
    from llama_index.core.retrievers import BaseRetriever

    from .segments import SegmentedBM25

# Chunks whose shingles are kept between questions: a question compares its top passages and their
# candidates (tens of chunks), so this holds many questions' worth.
SHINGLE_CACHE_CHUNKS = 2048  # 22 MB at most
# Grouping by article, each retriever returns this many candidates per passage asked (at least
# ``Settings.candidates``): an article is ranked by several of its passages, so k articles need more than k.
GROUPING_CANDIDATES_PER_PASSAGE = 10
# An article's rank counts its best passage and its next two (each a smaller share): more would let a
# long page outrank a short one by length alone.
ARTICLE_PASSAGES_COUNTED = 3
# The BM25 ranking's weight in the fusion; the dense ranking's (Settings.dense_weight) is relative to it.
BM25_WEIGHT = 1.0
# newest_first: the passages fused at least this share of the best score are the ones about the query.
REACHED_SHARE = 0.5
# An article dated up to this many days after the question still counts as before it (time zones).
FUTURE_GRACE_DAYS = 1
# The recency prior of an article from after the question: it cannot be what the question asks about.
FUTURE_PRIOR = -1.0


def reciprocal_rank_fusion(rankings: list[tuple[list[tuple[int, float]], float]], k: int) -> dict[int, float]:
    """Chunk -> the sum over the weighted rankings holding it of ``weight / (k + rank)`` (rank from 1), in first-seen order."""
    fused: dict[int, float] = {}
    for ranking, weight in rankings:
        for rank, (i, _) in enumerate(ranking):
            fused[i] = fused.get(i, 0.0) + weight / (k + rank + 1)
    return fused


def bm25_top(bm: SegmentedBM25, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The ``k`` best BM25 matches of ``query`` as (passage, score), best first, among the ``allowed`` passages when given.

    The top k is chosen among the passages holding a query word: partitioning all passages'
    scores, mostly zeros, took ~30 ms for one query in ten at 500k passages.
    """
    tokens = bm25_tokenize([query])
    words = [w for w, i in sorted(tokens.vocab.items(), key=lambda x: x[1]) if w in bm.vocab_dict]
    if not words:
        return []
    scores = bm.get_scores(words)
    hits = np.flatnonzero(scores > 0 if allowed is None else (scores > 0) & allowed)
    if len(hits) > k:
        hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
    hits = hits[np.lexsort((hits, -scores[hits]))]  # best first; equal scores in chunk order
    return [(int(i), float(scores[i])) for i in hits]


class HybridRetriever:
    """Dense + BM25 retrieval over an :class:`Index`, fused by reciprocal rank."""

    def __init__(self, index: Index, settings: Settings):
        self.index = index
        self.settings = settings
        # shingles of the chunks compared for copies, by chunk text: kept for the most recent, as a
        # long-running server would otherwise come to hold every chunk's (11 KB for a 600-character chunk)
        self._shingles = functools.lru_cache(maxsize=SHINGLE_CACHE_CHUNKS)(shingles)
        self._canonical = self._canonical_chunks()
        self._chunk_index = {c.id: i for i, c in enumerate(index.chunks)}
        # read once per generation, so that no question costs a pass over every article
        self.article_dates = ArticleDates.of(index.docs.values())
        position = {doc_id: a for a, doc_id in enumerate(self.article_dates.ids)}
        self._article_of = np.fromiter((position[c.doc_id] for c in index.chunks), dtype=np.int64, count=len(index.chunks))
        self._vectors = _stored_vectors(index.vectors)  # row r is the vector of chunk index.dense_ids[r]
        self.store = open_store(index, settings)  # None: search the index's own vectors and BM25 postings
        # the index's own vectors through IVF lists when the corpus is large (RAG_VECTOR_INDEX), else exactly
        self.ivf = open_ivf(index, self._vectors, settings) if self.store is None else None
        self._masks: dict[DateRange, np.ndarray] = {}
        self._query: tuple[str, np.ndarray] | None = None

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
                best = max(
                    by_doc.get(doc.duplicate_of, []),
                    key=lambda j: containment(sh, self._chunk_shingles(self.index.chunks[j])),
                    default=None,
                )
                if best is not None and containment(sh, self._chunk_shingles(self.index.chunks[best])) >= self.settings.dup_threshold:
                    out[i] = best
        return out

    def _fold(self, ranking: list[tuple[int, float]], folded: dict[int, set[str]], allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Replace chunks of duplicate reports by their canonical chunk, so a repeat takes no rank.

        A canonical chunk outside the date range (``allowed``) does not replace the copy inside it.
        """
        out, seen = [], set()
        for i, s in ranking:
            j = self._canonical.get(i, i)
            if j != i and allowed is not None and not allowed[j]:
                j = i
            if j != i:
                folded.setdefault(j, set()).add(self.index.chunks[i].doc_id)
            if j not in seen:
                seen.add(j)
                out.append((j, s))
        return out

    def dense(self, qvec: np.ndarray, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest chunks, only among the ``allowed`` ones (a mask over chunks, made from ``dates``) when given.

        The exhaustive inner product of ``faiss.IndexFlatIP.search``, over the same stored vectors,
        in one thread: for a single query on 2 cores that is faster than FAISS's or BLAS's threads,
        whose spinning also slowed the embedding that follows by a third or more (einsum uses no
        thread pool). A date mask costs nothing extra (FAISS builds an ID selector per query).
        A large index (``RAG_VECTOR_INDEX``, :mod:`rag.index.ann`) is searched through IVF lists instead.
        """
        if self.store is not None:
            return self.store.dense(qvec, k, allowed, dates)
        keep = None if allowed is None else allowed[self.index.dense_ids]
        if self.ivf is not None:
            found = self.ivf.search(qvec, k, keep)
        else:
            scores = np.einsum("ij,j->i", self._vectors, qvec)
            if keep is not None:
                scores[~keep] = -np.inf
            found = best(scores, min(k, len(scores) if keep is None else int(keep.sum())))
        return [(int(self.index.dense_ids[r]), s) for r, s in found]

    def sparse(self, query: str, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` best BM25 matches, only among the ``allowed`` chunks when given (:func:`bm25_top`)."""
        if self.store is not None:
            return self.store.sparse(query, k, allowed, dates)
        return [] if self.index.bm25 is None else bm25_top(self.index.bm25, query, k, allowed)

    def _allowed(self, dates: DateRange | None) -> np.ndarray | None:
        """Which chunks belong to articles published in ``dates`` (None: all). Kept for the last range, as priors are."""
        if dates is None:
            return None
        mask = self._masks.get(dates)
        if mask is None:
            mask = self.article_dates.holding(dates)[self._article_of]
            self._masks = {dates: mask}
        return mask

    def retrieve(
        self,
        query: str,
        top_k: int | None = None,
        as_of: str | None = None,
        group_by_article: bool = False,
        dates: DateRange | None = None,
        newest_first: bool = False,
        embed_unstored: bool = True,
    ) -> list[Passage]:
        """The top passages for ``query``, numbered 1..k; repeats of a passage are folded into it.

        ``as_of`` (ISO date) is when the question is asked: articles published in the days before
        it are preferred (news questions are mostly about the latest reports). With
        ``group_by_article`` each article gives at most its best passage, so the k passages rank k articles.
        ``dates`` keeps every other article out before ranking, so the k passages all come from
        articles in the range. ``newest_first`` (no ``as_of``): prefer the newest of the articles the
        query reaches, as if asked on that article's date.

        A passage's score is its cosine to the query. A passage only BM25 found that lies past its
        article's embedded lead has no stored vector: it is embedded now (20-80 ms on 2 cores), or
        with ``embed_unstored=False`` its score is left None for the answer pipeline, which embeds
        it with its sentences (:meth:`rag.answer.evidence.Evidence.build`).
        """
        top_k = top_k or self.settings.top_k
        if not self.index.chunks:
            return []
        qvec = self._query_vector(query)
        folded: dict[int, set[str]] = {}  # canonical chunk -> the duplicate reports folded into it
        dense, sparse = self._candidates(query, qvec, top_k, group_by_article, dates, folded)
        fused = reciprocal_rank_fusion([(dense, self.settings.dense_weight), (sparse, BM25_WEIGHT)], self.settings.rrf_k)
        if newest_first and not as_of and fused:
            as_of = self._newest_reached(fused)
        if as_of and self.settings.recency_weight:
            self._add_recency(fused, as_of)
        order = sorted(fused, key=lambda i: -fused[i])
        if group_by_article and self.settings.article_support:
            order = self._by_article(order, fused)
        cos = dict(dense)  # the dense score is the cosine to the query
        passages = self._passages(order, top_k, group_by_article, cos, folded)
        self._fill_cosines(passages, qvec, cos, embed_unstored)
        return passages

    def _candidates(
        self, query: str, qvec: np.ndarray, top_k: int, group_by_article: bool, dates: DateRange | None, folded: dict[int, set[str]]
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """The dense and the BM25 candidates, best first, each with repeats folded into their canonical chunk."""
        s = self.settings
        n_cand = max(s.candidates, GROUPING_CANDIDATES_PER_PASSAGE * top_k) if group_by_article else s.candidates
        allowed = self._allowed(dates)
        dense = self._fold(self.dense(qvec, n_cand, allowed, dates), folded, allowed)
        sparse = self._fold(self.sparse(query, n_cand, allowed, dates), folded, allowed)
        return dense, sparse

    def _add_recency(self, fused: dict[int, float], as_of: str) -> None:
        """Add each chunk's recency bonus for a question asked on ``as_of``, in units of a rank-1 fusion score."""
        s = self.settings
        ids = list(fused)
        for i, prior in zip(ids, self._recency(as_of, self._article_of[np.array(ids, dtype=np.int64)]).tolist()):
            fused[i] += s.recency_weight / (s.rrf_k + 1) * prior

    def _by_article(self, order: list[int], fused: dict[int, float]) -> list[int]:
        """``order`` re-sorted by article: an article's score is its best passage plus a share of its next ones.

        A page that keeps returning to the question's subject beats one that mentions it once.
        """
        support = self.settings.article_support
        article: dict[str, float] = {}
        seen: dict[str, int] = {}
        for i in order:
            d = self.index.chunks[i].doc_id
            k = seen.get(d, 0)
            seen[d] = k + 1
            article[d] = article.get(d, 0.0) + fused[i] * (support**k if k < ARTICLE_PASSAGES_COUNTED else 0.0)
        return sorted(order, key=lambda i: -article[self.index.chunks[i].doc_id])

    def _passages(
        self, order: list[int], top_k: int, group_by_article: bool, cos: dict[int, float], folded: dict[int, set[str]]
    ) -> list[Passage]:
        """The first ``top_k`` chunks of ``order`` as numbered passages; a near-duplicate of one taken is named on it instead."""
        passages: list[Passage] = []
        for i in order:
            chunk = self.index.chunks[i]
            doc = self.index.docs[chunk.doc_id]
            if group_by_article and any(p.doc.id == doc.id for p in passages):
                continue
            dup = self._duplicate_of(chunk, passages)
            if dup is not None:
                if doc.id != dup.doc.id and doc.id not in dup.also_reported_by:
                    dup.also_reported_by.append(doc.id)
                continue
            if len(passages) >= top_k:
                break
            passages.append(
                Passage(n=len(passages) + 1, chunk=chunk, score=cos.get(i, 0.0), doc=doc, also_reported_by=sorted(folded.get(i, ())))
            )
        return passages

    def retrieve_across_articles(
        self,
        query: str,
        top_k: int | None = None,
        as_of: str | None = None,
        dates: DateRange | None = None,
        newest_first: bool = False,
        embed_unstored: bool = True,
    ) -> list[Passage]:
        """For questions that span years: the top passages, the best passage of each further article
        the query reaches, and each of those articles' first passage (a news story's lede sums it up)."""
        top_k = top_k or self.settings.top_k
        how = dict(as_of=as_of, dates=dates, newest_first=newest_first, embed_unstored=embed_unstored)
        passages = self.retrieve(query, 2 * top_k, **how)
        have = {p.chunk.id for p in passages}
        for p in self.retrieve(query, 2 * top_k, group_by_article=True, **how):
            if p.chunk.id not in have and not any(p.doc.id in q.also_reported_by for q in passages):
                have.add(p.chunk.id)
                passages.append(p)
        ledes = []
        for doc_id in dict.fromkeys(p.doc.id for p in passages):
            i = self._chunk_index.get(f"{doc_id}#0")
            if i is not None and self.index.chunks[i].id not in have:
                have.add(self.index.chunks[i].id)
                ledes.append(Passage(n=0, chunk=self.index.chunks[i], score=0.0, doc=self.index.docs[doc_id]))
        self._fill_cosines(ledes, self._query_vector(query), {}, embed_unstored)
        passages += ledes
        for n, p in enumerate(passages, 1):
            p.n = n
        return passages

    def _query_vector(self, query: str) -> np.ndarray:
        """The query's vector; the last one is kept, as retrieve_across_articles asks one query three times."""
        last = self._query
        if last is None or last[0] != query:
            last = (query, embedding.embed([query])[0])
            self._query = last  # replaced whole, so threads never see a query with another's vector
        return last[1]

    def _fill_cosines(self, passages: list[Passage], qvec: np.ndarray, cos: dict[int, float], embed_unstored: bool = True) -> None:
        """Cosine of the passages only BM25 found, for the relevance gate downstream (None: not embedded, see retrieve)."""
        stored: list[tuple[Passage, int]] = []
        unstored: list[Passage] = []
        for p in passages:
            i = self._chunk_index[p.chunk.id]
            if i in cos:
                continue
            if i in self.index.row_of:
                stored.append((p, self.index.row_of[i]))
            else:
                unstored.append(p)
        if stored:
            for (p, _), v in zip(stored, self._vectors[[r for _, r in stored]] @ qvec):
                p.score = float(v)
        if unstored and embed_unstored:  # past an article's embedded lead: embed the few returned now
            vecs = embedding.embed([embed_text(p.chunk, p.doc) for p in unstored])
            for p, v in zip(unstored, vecs @ qvec):
                p.score = float(v)
        elif unstored:
            for p in unstored:
                p.score = None

    def _newest_reached(self, fused: dict[int, float]) -> str | None:
        """The newest date among the articles of the passages scoring at least half the best: those about the query."""
        best = max(fused.values())
        near = np.array([i for i, v in fused.items() if v >= REACHED_SHARE * best], dtype=np.int64)
        days = self.article_dates.published[self._article_of[near]]
        days = days[days != NO_DAY]
        return date.fromordinal(int(days.max())).isoformat() if len(days) else None

    def _recency(self, as_of: str, articles: np.ndarray) -> np.ndarray:
        """Per article (positions in ``article_dates``), 1.0 for one published on the day asked, decaying
        with age; less for a later one; 0 for an undated one."""
        try:
            asked = date.fromisoformat(as_of[:10])
        except ValueError as exc:
            raise RagError(f"as_of must be an ISO date (YYYY-MM-DD), not {as_of!r}") from exc
        published = self.article_dates.published[articles]
        age = asked.toordinal() - published
        prior = 0.5 ** (np.maximum(age, 0) / self.settings.recency_half_life_days)
        prior[age < -FUTURE_GRACE_DAYS] = FUTURE_PRIOR
        prior[published == NO_DAY] = 0.0
        return prior

    def _duplicate_of(self, chunk: Chunk, passages: list[Passage]) -> Passage | None:
        sh = self._chunk_shingles(chunk)
        for p in passages:
            if containment(sh, self._chunk_shingles(p.chunk)) >= self.settings.dup_threshold:
                return p
        return None

    def _chunk_shingles(self, chunk: Chunk) -> set[int]:
        return self._shingles(chunk.text)

    def as_llama_retriever(self) -> BaseRetriever:
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


def _stored_vectors(vectors) -> np.ndarray:
    """The rows of a ``faiss.IndexFlatIP`` as a numpy view of its own storage (no copy: the index keeps it alive)."""
    import faiss

    n, dim = vectors.ntotal, vectors.d
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return faiss.rev_swig_ptr(vectors.get_xb(), n * dim).reshape(n, dim)
