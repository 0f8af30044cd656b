"""Where retrieval searches: the index's own vectors and BM25 postings (rag.index.segments), or a Qdrant collection mirroring them.

``RAG_STORE=faiss`` (the default) searches inside the opened index generation (``HybridRetriever``'s own
``dense``/``sparse``). ``RAG_STORE=qdrant`` searches a Qdrant collection: embedded on disk under the index
folder (``index/qdrant/``), or a Qdrant server or cluster at ``RAG_STORE_URL``, with the same client code.
The store holds only vectors, BM25 term weights and the article dates; chunk texts, article texts and spans
stay in the index, so quotes are exact whatever the store.

The collection mirrors the index generation it is opened for: each point is keyed by its chunk's id and
a hash of the text that was embedded and BM25-indexed (and of how it was embedded), so opening a new
generation adds the points it lacks and deletes the stale ones, re-sending nothing unchanged.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import numpy as np

from ..dates import NO_DAY, ArticleDates, DateRange
from ..settings import Settings
from ..types import RagError
from .embedding import embed_text
from .mirror import BM25_B, BM25_K1, bm25_vector, collection_name, point_keys, query_terms, term_weights
from .reader import Index

if TYPE_CHECKING:
    from qdrant_client import QdrantClient, models

LOCAL_FOLDER = "qdrant"  # under the index folder, beside the generations
LOCAL_COLLECTION = "chunks"
DENSE = "dense"
SPARSE = "bm25"
UPSERT_BATCH = 512
SCROLL_PAGE = 10_000


class VectorStore(Protocol):
    """The two rankings hybrid retrieval fuses: chunk index (position in ``Index.chunks``) and score, best first."""

    def dense(self, qvec: np.ndarray, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` chunks whose stored vectors have the largest inner product with ``qvec``."""
        ...

    def sparse(self, query: str, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` best BM25 matches for ``query``.

        ``allowed`` (a mask over chunks) and ``dates`` (the range it was made from) keep other chunks out.
        """
        ...


def open_store(index: Index, settings: Settings) -> VectorStore | None:
    """The store ``settings.store`` names, brought in step with ``index``; None for ``faiss`` (the index's own).

    ``settings.store`` is one of its choices: Settings refuses any other value when it is built.
    """
    if settings.store == "faiss":
        return None
    if settings.store == "qdrant":
        return QdrantStore.open(index, settings.store_url)
    from .milvus import MilvusStore  # Milvus's own engine, embedded or a cluster (rag.index.milvus)

    return MilvusStore.open(index, settings)


def check_url(url: str) -> str:
    """``url`` when it names a Qdrant server (http or https, a host, a port if any); else a RagError naming it.

    Qdrant's client takes anything and fails later with its own traceback (``file://…``,
    ``http://[::1`` without its bracket, spaces).
    """
    shown = f"RAG_STORE_URL={url!r}"
    if url != url.strip() or any(c.isspace() for c in url):
        raise RagError(f"{shown} holds spaces: give a server address such as http://localhost:6333")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks the port (ValueError past 65535 or not a number)
    except ValueError as exc:
        raise RagError(f"{shown} is not a URL ({exc}): give a server address such as http://localhost:6333") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RagError(f"{shown} is not an http(s) server address: give one such as http://localhost:6333, or unset it for the embedded store")
    return url


_CLIENTS: dict[str, QdrantClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(where: str, local: bool) -> QdrantClient:
    """One client per folder or URL in a process: an embedded store's folder takes one client at a time."""
    try:
        from qdrant_client import QdrantClient
    except ImportError as exc:
        raise RagError("RAG_STORE=qdrant needs the qdrant extra: pip install 'newsrag[qdrant]' (or unset RAG_STORE)") from exc
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(where)
        if client is None:
            try:
                client = QdrantClient(path=where) if local else QdrantClient(url=where)
            except RuntimeError as exc:  # the embedded store's folder is locked by another process
                raise RagError(
                    f"the embedded Qdrant store at {where} is open in another process ({exc}); "
                    "close it, or run a Qdrant server and set RAG_STORE_URL"
                ) from exc
            _CLIENTS[where] = client
        return client


@atexit.register
def _close_clients() -> None:
    """Close while the interpreter still runs: an embedded client left to its finaliser raises at shutdown."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            client.close()
        _CLIENTS.clear()


class QdrantStore:
    """Dense and BM25 search in a Qdrant collection that mirrors one index generation."""

    def __init__(self, client: QdrantClient, collection: str, index: Index, point_chunk: dict[str, int]) -> None:
        self.client = client
        self.collection = collection
        self.index = index
        self._point_chunk = point_chunk  # point id -> chunk index, for this generation's points only
        self._doc_of = np.array([c.doc_id for c in index.chunks], dtype=object)

    @classmethod
    def open(cls, index: Index, url: str | None = None) -> QdrantStore:
        """The collection for ``index`` (embedded under ``index.root`` when ``url`` is empty), brought in step with it."""
        if url:
            client, collection = _client(check_url(url), local=False), collection_name(index.root)
        else:
            client, collection = _client(str(index.root / LOCAL_FOLDER), local=True), LOCAL_COLLECTION
        try:
            point_chunk = sync(client, collection, index, indexed_payload=bool(url))
        except RagError:
            raise
        except Exception as exc:  # unreachable server, refused request
            raise RagError(f"cannot bring the Qdrant store {url or index.root / LOCAL_FOLDER} in step with the index: {exc}") from exc
        return cls(client, collection, index, point_chunk)

    def dense(self, qvec: np.ndarray, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest chunks among those with a stored vector (an article's first passages)."""
        return self._search(np.asarray(qvec, dtype=np.float32).tolist(), DENSE, k, allowed, dates, positive=False)

    def sparse(self, query: str, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` best BM25 matches; the store computes each term's IDF over the collection."""
        from qdrant_client import models

        terms = query_terms(query)
        if not terms:
            return []
        # only passages holding a query word, as bm25s's scores > 0
        return self._search(models.SparseVector(indices=terms, values=[1.0] * len(terms)), SPARSE, k, allowed, dates, positive=True)

    def _search(
        self, query: object, using: str, k: int, allowed: np.ndarray | None, dates: DateRange | None, positive: bool
    ) -> list[tuple[int, float]]:
        if k <= 0 or (allowed is not None and not allowed.any()):
            return []
        found = self.client.query_points(
            self.collection, query=query, using=using, limit=k, query_filter=self._filter(allowed, dates), with_payload=False
        ).points
        out = []
        for p in found:
            i = self._point_chunk.get(str(p.id))
            # a point of another generation (another writer mid-sync) or one the mask refuses is never served
            if i is not None and (allowed is None or allowed[i]) and (p.score > 0 or not positive):
                out.append((i, float(p.score)))
        out.sort(key=lambda x: (-x[1], x[0]))  # equal scores in chunk order, as the in-index search breaks ties
        return out

    def _filter(self, allowed: np.ndarray | None, dates: DateRange | None) -> models.Filter | None:
        """A payload filter on the article dates the range holds (as ``DateRange.holds``), else on the allowed articles."""
        from qdrant_client import models

        if dates is not None:
            return date_filter(dates)
        if allowed is None:
            return None
        docs = sorted(set(self._doc_of[allowed].tolist()))
        return models.Filter(must=[models.FieldCondition(key="doc", match=models.MatchAny(any=docs))])


def date_filter(dates: DateRange) -> models.Filter:
    """The points of articles whose date period overlaps ``dates``, and the undated ones if it keeps them."""
    from qdrant_client import models

    dated = [models.FieldCondition(key="first", range=models.Range(gt=NO_DAY))]
    if dates.since is not None:
        dated.append(models.FieldCondition(key="last", range=models.Range(gte=dates.since.toordinal())))
    if dates.until is not None:
        dated.append(models.FieldCondition(key="first", range=models.Range(lte=dates.until.toordinal())))
    if not dates.keep_undated:
        return models.Filter(must=dated)
    undated = models.FieldCondition(key="first", match=models.MatchValue(value=NO_DAY))
    return models.Filter(should=[models.Filter(must=dated), undated])


def sync(client: QdrantClient, collection: str, index: Index, indexed_payload: bool = True) -> dict[str, int]:
    """Make ``collection`` hold exactly ``index``'s points: add the missing, delete the stale. Point id -> chunk index.

    ``indexed_payload``: index the date and article fields for filtering (a server's; the embedded store scans).
    """
    from qdrant_client import models

    want = point_keys(index)
    if not client.collection_exists(collection):
        client.create_collection(
            collection,
            vectors_config={DENSE: models.VectorParams(size=index.manifest.dim or 384, distance=models.Distance.DOT)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
        if indexed_payload:
            for key, kind in (("first", "integer"), ("last", "integer"), ("doc", "keyword")):
                client.create_payload_index(collection, key, field_schema=models.PayloadSchemaType(kind))
    have = set(_point_ids(client, collection))
    stale = [p for p in have if p not in want]
    missing = [(p, i) for p, i in want.items() if p not in have]
    if missing:
        _upsert(client, collection, index, missing)
    for start in range(0, len(stale), SCROLL_PAGE):
        client.delete(collection, points_selector=models.PointIdsList(points=stale[start : start + SCROLL_PAGE]))
    return want


def _avgdl(client: QdrantClient, collection: str, lengths: list[int]) -> float:
    """The average passage length BM25 normalises by: recorded with the collection when first filled, then kept.

    Kept, not recomputed, so that adding articles never re-sends every point; the index's own BM25 of each
    generation uses the exact mean, so scores drift apart slightly as the corpus grows far past its first fill.
    """
    meta = client.get_collection(collection).config.metadata or {}
    avgdl = meta.get("avgdl")
    if isinstance(avgdl, int | float) and avgdl > 0:
        return float(avgdl)
    avgdl = float(np.mean(lengths)) if lengths else 1.0
    client.update_collection(collection, metadata={**meta, "avgdl": avgdl, "k1": BM25_K1, "b": BM25_B})
    return avgdl


def _upsert(client: QdrantClient, collection: str, index: Index, points: list[tuple[str, int]]) -> None:
    from qdrant_client import models

    texts = [embed_text(index.chunks[i], index.docs[index.chunks[i].doc_id]) for _, i in points]
    counts, lengths = term_weights(texts)
    avgdl = _avgdl(client, collection, lengths)
    row_of = index.row_of
    need_rows = [row_of[i] for _, i in points if i in row_of]
    vectors = index.vector_matrix() if need_rows else None  # every row: the index gives no cheaper way to read a few
    dates = ArticleDates.of(index.docs.values())
    position = {d: a for a, d in enumerate(dates.ids)}
    batch: list[models.PointStruct] = []
    for (pid, i), c, n in zip(points, counts, lengths):
        chunk = index.chunks[i]
        ids, values = bm25_vector(c, n, avgdl)
        vector: dict[str, object] = {SPARSE: models.SparseVector(indices=ids, values=values)} if ids else {}
        if i in row_of:
            vector[DENSE] = vectors[row_of[i]].tolist()
        a = position[chunk.doc_id]
        payload = {"chunk": chunk.id, "doc": chunk.doc_id, "first": int(dates.first[a]), "last": int(dates.last[a])}
        batch.append(models.PointStruct(id=pid, vector=vector, payload=payload))
        if len(batch) >= UPSERT_BATCH:
            client.upsert(collection, batch, wait=True)
            batch = []
    if batch:
        client.upsert(collection, batch, wait=True)


def _point_ids(client: QdrantClient, collection: str) -> Iterable[str]:
    offset = None
    while True:
        points, offset = client.scroll(collection, limit=SCROLL_PAGE, offset=offset, with_payload=False, with_vectors=False)
        yield from (str(p.id) for p in points)
        if offset is None:
            return
