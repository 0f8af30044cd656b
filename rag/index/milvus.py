"""Retrieval's dense and BM25 searches in Milvus: its own engine embedded on disk, or a Milvus cluster at a URL.

``RAG_STORE=milvus`` with ``RAG_STORE_URL`` unset (or a local ``.db`` file) starts the Milvus server binary
that the pinned ``milvus-lite`` wheel ships (``milvus_lite/lib/milvus``, Knowhere inside) as a child process
on a private socket; ``http(s)://host:19530`` talks to a Milvus standalone or distributed cluster with the
same ``MilvusClient`` code. The collection holds vectors, BM25 term weights, article ids and dates (integer
days); chunk texts, article texts and spans stay in the index, so quotes are exact whatever the store.

Generations: every entity carries ``born`` and ``died``, the index generations it entered and left, and a
reader of generation G searches ``born <= G and died > G``. A state entity records the generation the
store last published. A writer (the first process to open a new generation) upserts what the generation
adds (born G), marks what it drops (died G), publishes G, then purges what only older generations saw.
A crash at any step leaves every reader of the published and the new generation served exactly its own
entities; the next opener of the new generation finishes the write.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..dates import NO_DAY, ArticleDates, DateRange
from ..settings import Settings
from ..text import bm25_tokenize
from ..types import RagError
from .embedding import embed_text
from .milvus_engine import LOCAL_COLLECTION, LOCAL_FOLDER, connect, engine_error, milvus_collection, where
from .mirror import bm25_vector, point_keys, term_id
from .reader import Index
from .writer import fault_point

if TYPE_CHECKING:
    from pymilvus import MilvusClient
STATE_ID = "~state"  # the state entity's key: never a point key (those are UUIDs)
ALIVE = 2**62  # ``died`` of an entity no generation has dropped
KEY_CHARS = 36
NAME_CHARS = 2048  # longest article or chunk id stored
WRITE_BATCH = 512
LIST_BATCH = 10_000
# Milvus's sparse indices are u32 below 2**32 - 1; the one hash on that value folds onto another
SPARSE_MAX = 2**32 - 1
SEARCH_PARAMS = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}  # every posting scored: exact BM25


def milvus_term(word: str) -> int:
    """A BM25 term's sparse index: :func:`rag.index.mirror.term_id` within Milvus's range."""
    return term_id(word) % SPARSE_MAX


# ---------------------------------------------------------------- the store
class MilvusStore:
    """Dense and BM25 search in a Milvus collection, served as one index generation sees it."""

    def __init__(self, client: MilvusClient, collection: str, index: Index, point_chunk: dict[str, int], generation: int) -> None:
        self.client = client
        self.collection = collection
        self.index = index
        self.generation = generation
        self._point_chunk = point_chunk  # entity key -> chunk index, for this generation's entities only
        self._doc_of = np.array([c.doc_id for c in index.chunks], dtype=object)
        self._visible = f"born <= {generation} and died > {generation}"

    @classmethod
    def open(cls, index: Index, settings: Settings) -> MilvusStore:
        """The collection for ``index`` (embedded under ``index.root`` unless ``RAG_STORE_URL`` names a file or cluster), in step with it."""
        place = where(index.root, settings.store_url)
        client = connect(place, settings)
        # a file or cluster named in RAG_STORE_URL may serve several indexes: each its own collection
        collection = milvus_collection(index.root) if settings.store_url else LOCAL_COLLECTION
        generation = generation_number(index)
        try:
            with one_writer(index.root, collection):
                point_chunk = sync(client, collection, index, generation)
        except RagError:
            raise
        except Exception as exc:  # a refused request, a lost connection
            raise RagError(f"cannot bring the Milvus store {place} in step with the index: {engine_error(exc)}") from exc
        return cls(client, collection, index, point_chunk, generation)

    def dense(self, qvec: np.ndarray, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` chunks with the largest inner product with ``qvec`` among those with a stored vector."""
        query = np.asarray(qvec, dtype=np.float32).tolist()
        return self._search(query, "dense", k, allowed, dates, "has_dense == true", positive=False)

    def sparse(self, query: str, k: int, allowed: np.ndarray | None = None, dates: DateRange | None = None) -> list[tuple[int, float]]:
        """The ``k`` best BM25 matches: the entities hold each term's BM25 part, the query each term's IDF over the index."""
        weights = query_idf(self.index, query)
        if not weights:
            return []
        return self._search(weights, "bm25", k, allowed, dates, "", positive=True)

    def _search(
        self, query: object, field: str, k: int, allowed: np.ndarray | None, dates: DateRange | None, extra: str, positive: bool
    ) -> list[tuple[int, float]]:
        if k <= 0 or (allowed is not None and not allowed.any()):
            return []
        expr = " and ".join(e for e in (self._visible, extra, self._filter(allowed, dates)) if e)
        try:
            hits = self.client.search(
                self.collection, [query], anns_field=field, limit=k, filter=expr, search_params=SEARCH_PARAMS, consistency_level="Strong"
            )[0]
        except Exception as exc:
            raise RagError(f"the Milvus store {self.collection} failed a search: {engine_error(exc)}") from exc
        out = []
        for h in hits:
            i = self._point_chunk.get(str(h["id"]))
            if i is not None and (allowed is None or allowed[i]) and (h["distance"] > 0 or not positive):
                out.append((i, float(h["distance"])))
        out.sort(key=lambda x: (-x[1], x[0]))  # equal scores in chunk order, as the in-index search breaks ties
        return out

    def _filter(self, allowed: np.ndarray | None, dates: DateRange | None) -> str:
        """A filter expression on the article dates the range holds (as ``DateRange.holds``), else on the allowed articles."""
        if dates is not None:
            return date_filter(dates)
        if allowed is None:
            return ""
        docs = sorted(set(self._doc_of[allowed].tolist()))
        return f"doc in [{', '.join(json.dumps(d) for d in docs)}]"


@contextmanager
def one_writer(root: Path, collection: str) -> Iterator[None]:
    """Bring the store in step in one process at a time: the others wait, then find it published and only read."""
    # two processes opening different generations at once would each plan from what the other changes.
    # Waiting has no limit: a writer that dies lets go, and one that hangs is ended by its client's timeout
    try:
        (root / LOCAL_FOLDER).mkdir(exist_ok=True)
        f = open(root / LOCAL_FOLDER / f".{collection}.sync.lock", "a")
    except OSError:  # a read-only index folder: brought in step without the lock
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def date_filter(dates: DateRange) -> str:
    """The entities of articles whose date period overlaps ``dates``, and the undated ones if it keeps them."""
    dated = [f"first > {NO_DAY}"]
    if dates.since is not None:
        dated.append(f"last >= {dates.since.toordinal()}")
    if dates.until is not None:
        dated.append(f"first <= {dates.until.toordinal()}")
    expr = " and ".join(dated)
    return f"(({expr}) or first == {NO_DAY})" if dates.keep_undated else f"({expr})"


def query_idf(index: Index, query: str) -> dict[int, float]:
    """The query's distinct BM25 terms -> IDF over the generation's live passages, in float32 as the index scores."""
    bm = index.bm25
    if bm is None:
        return {}
    out: dict[int, float] = {}
    for word in bm25_tokenize([query]).vocab:
        if not word:
            continue
        df = 0
        for terms, at in bm.parts:
            col = terms.vocab.get(word)
            if col is not None:
                df += int((at[terms.rows[terms.indptr[col] : terms.indptr[col + 1]]] >= 0).sum())
        if df:
            t = milvus_term(word)
            out[t] = out.get(t, 0.0) + float(np.float32(math.log(1 + (bm.n - df + 0.5) / (df + 0.5))))
    return out


def generation_number(index: Index) -> int:
    """The index generation's number (``gen-000007`` -> 7): generations only ever count up."""
    m = re.fullmatch(r"gen-(\d+)", index.gen.name)
    if not m:
        raise RagError(f"index generation {index.gen} has no generation number: rebuild with `rag index --rebuild`")
    return int(m.group(1))


# ---------------------------------------------------------------- keeping the collection in step
@dataclass
class State:
    """What the state entity records: the generation last published, and BM25's length normalisation."""

    published: int
    avgdl: float


def sync(client: MilvusClient, collection: str, index: Index, generation: int) -> dict[str, int]:
    """Bring ``collection`` to serve ``generation`` (a write, when it serves an older one). Entity key -> chunk index."""
    want = point_keys(index)
    ensure_collection(client, collection, index.manifest.dim or 384)
    state = _state(client, collection, index)
    if state.published >= generation:  # published already, or this reader's generation is older: read only
        return want
    old = state.published
    have = _list(client, collection)
    seen_old = {k for k, (born, died) in have.items() if born <= old < died}  # what readers of the published generation see
    missing = [(k, i) for k, i in want.items() if k not in have]
    # in the new generation: kept from the published one (alive again if an unpublished attempt dropped it), else born now
    keep = [k for k in want if k in seen_old and have[k][1] != ALIVE]
    revive = [k for k in want if k in have and k not in seen_old and have[k] != (generation, ALIVE)]
    dropped = [k for k in seen_old if k not in want and have[k][1] > generation]
    unpublished = [k for k, (born, _) in have.items() if k not in want and born > old]  # left by a killed attempt
    _upsert(client, collection, index, missing, generation, state.avgdl)
    _rewrite(client, collection, keep, born=None, died=ALIVE)
    _rewrite(client, collection, revive, born=generation, died=ALIVE)
    _rewrite(client, collection, dropped, born=None, died=generation)
    _delete(client, collection, unpublished)
    fault_point("milvus_publish")
    _write_state(client, collection, State(generation, state.avgdl), index.manifest.dim or 384)
    # what only generations before the published one saw: no reader this store serves needs it now
    _delete(client, collection, [k for k, (born, died) in have.items() if k not in want and born <= old and died <= old], "milvus_purge")
    return want


def _delete(client: MilvusClient, collection: str, keys: list[str], fault: str = "") -> None:
    for lo in range(0, len(keys), WRITE_BATCH):
        client.delete(collection, ids=keys[lo : lo + WRITE_BATCH])
        if fault:
            fault_point(fault)


def ensure_collection(client: MilvusClient, collection: str, dim: int) -> None:
    """Create, index and load the collection, each step only if it is not done (a process killed midway left the rest)."""
    from pymilvus import DataType
    from pymilvus.client.types import LoadState

    if not client.has_collection(collection):
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False, description="newsrag passages")
        schema.add_field("id", DataType.VARCHAR, max_length=KEY_CHARS, is_primary=True)
        schema.add_field("chunk", DataType.VARCHAR, max_length=NAME_CHARS)
        schema.add_field("doc", DataType.VARCHAR, max_length=NAME_CHARS)
        for name in ("first", "last", "born", "died"):
            schema.add_field(name, DataType.INT64)
        schema.add_field("has_dense", DataType.BOOL)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
        client.create_collection(collection, schema=schema, consistency_level="Strong")
    fields = {f["name"]: f.get("params", {}) for f in client.describe_collection(collection)["fields"]}
    if int(fields.get("dense", {}).get("dim", 0)) != dim:
        raise RagError(
            f"the Milvus collection {collection} holds {fields.get('dense', {}).get('dim', 'no')}-d vectors and the index {dim}-d "
            "(it was filled by another embedder): drop the collection, or delete the embedded store's file, and open again"
        )
    for field, kind in (("dense", "FLAT"), ("bm25", "SPARSE_INVERTED_INDEX")):
        if not client.list_indexes(collection, field_name=field):  # a cluster's own (HNSW, say) is kept
            # exact inner product, as the in-index search: a cluster holding millions can be given HNSW instead
            params = client.prepare_index_params()
            params.add_index(field, index_name=field, index_type=kind, metric_type="IP")
            _twice(lambda p=params: client.create_index(collection, p))
    if client.get_load_state(collection).get("state") != LoadState.Loaded:
        _twice(lambda: client.load_collection(collection))


def _twice(step) -> None:
    """Run an engine step, once more after a moment if it fails: a busy embedded engine has refused one (internal error)."""
    try:
        step()
    except Exception:
        time.sleep(0.5)
        step()


def _state(client: MilvusClient, collection: str, index: Index) -> State:
    """The recorded state; a new collection records its BM25 average length now, from this generation."""
    rows = client.query(collection, ids=[STATE_ID], output_fields=["born", "doc"], consistency_level="Strong")
    if rows:
        avgdl = json.loads(rows[0]["doc"]).get("avgdl")
        return State(int(rows[0]["born"]), float(avgdl))
    bm = index.bm25  # the index's BM25 is over the same texts and tokens: its mean length is theirs
    total = sum(int(t.lengths[at >= 0].sum()) for t, at in bm.parts) if bm is not None else 0
    state = State(0, total / bm.n if bm is not None and bm.n else 1.0)
    _write_state(client, collection, state, index.manifest.dim or 384)
    return state


def _write_state(client: MilvusClient, collection: str, state: State, dim: int) -> None:
    """The state entity: ``died`` -1 keeps it out of every reader's search."""
    doc = json.dumps({"avgdl": state.avgdl})
    row = {"id": STATE_ID, "chunk": "", "doc": doc, "first": NO_DAY, "last": NO_DAY, "born": state.published, "died": -1}
    client.upsert(collection, [{**row, "has_dense": False, "dense": [0.0] * dim, "bm25": {}}])


def _list(client: MilvusClient, collection: str) -> dict[str, tuple[int, int]]:
    """Every entity's key -> (born, died), the state entity left out."""
    out: dict[str, tuple[int, int]] = {}
    log = logging.getLogger("pymilvus")
    level = log.level
    log.setLevel(logging.ERROR)  # the embedded engine has no timestamp call: pymilvus warns, then pages by key as well
    try:
        it = client.query_iterator(
            collection, batch_size=LIST_BATCH, filter="died >= 0", output_fields=["born", "died"], consistency_level="Strong"
        )
    finally:
        log.setLevel(level)
    try:
        while rows := it.next():
            out.update((r["id"], (int(r["born"]), int(r["died"]))) for r in rows)
    finally:
        it.close()
    return out


def _rewrite(client: MilvusClient, collection: str, keys: list[str], born: int | None, died: int) -> None:
    """Set ``died`` (and ``born`` if given) of stored entities: Milvus 2.4 replaces whole entities, so they are read back first."""
    for lo in range(0, len(keys), WRITE_BATCH):
        rows = client.query(collection, ids=keys[lo : lo + WRITE_BATCH], output_fields=["*"], consistency_level="Strong")
        for r in rows:
            r["died"] = died
            if born is not None:
                r["born"] = born
            r["bm25"] = {int(t): float(v) for t, v in r["bm25"].items()}
        if rows:
            client.upsert(collection, rows)


def _upsert(client: MilvusClient, collection: str, index: Index, points: list[tuple[str, int]], generation: int, avgdl: float) -> None:
    """Write the generation's new entities: vector (or zeros, flagged), BM25 term parts, article, dates."""
    if not points:
        return
    texts = [embed_text(index.chunks[i], index.docs[index.chunks[i].doc_id]) for _, i in points]
    tokens = bm25_tokenize(texts)
    words = {i: w for w, i in tokens.vocab.items()}
    row_of = index.row_of
    vectors = index.vector_matrix() if any(i in row_of for _, i in points) else None
    dim = index.manifest.dim or 384
    zeros = [0.0] * dim
    dates = ArticleDates.of(index.docs.values())
    position = {d: a for a, d in enumerate(dates.ids)}
    batch: list[dict] = []
    for n, ((key, i), ids) in enumerate(zip(points, tokens.ids)):
        counts: dict[int, float] = {}
        for t in ids:
            m = milvus_term(words[t])
            counts[m] = counts.get(m, 0.0) + 1.0
        terms, values = bm25_vector(counts, len(ids), avgdl)
        chunk = index.chunks[i]
        a = position[chunk.doc_id]
        has = i in row_of
        batch.append(
            {
                "id": key,
                "chunk": chunk.id,
                "doc": chunk.doc_id,
                "first": int(dates.first[a]),
                "last": int(dates.last[a]),
                "born": generation,
                "died": ALIVE,
                "has_dense": has,
                "dense": vectors[row_of[i]].tolist() if has else zeros,
                "bm25": dict(zip(terms, values)),
            }
        )
        if len(batch) >= WRITE_BATCH or n == len(points) - 1:
            client.upsert(collection, batch)
            batch = []
            fault_point("milvus_upsert")

