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

import atexit
import fcntl
import importlib.util
import json
import logging
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import numpy as np

from .dates import NO_DAY, ArticleDates, DateRange
from .index import Index, embed_text, fault_point
from .settings import Settings
from .store import bm25_vector, collection_name, point_keys, term_id
from .text import bm25_tokenize
from .types import RagError

if TYPE_CHECKING:
    from pymilvus import MilvusClient

LOCAL_FOLDER = "milvus"  # under the index folder, beside the generations
LOCAL_FILE = "milvus.db"
LOCAL_COLLECTION = "chunks"
STATE_ID = "~state"  # the state entity's key: never a point key (those are UUIDs)
ALIVE = 2**62  # ``died`` of an entity no generation has dropped
KEY_CHARS = 36
NAME_CHARS = 2048  # longest article or chunk id stored
WRITE_BATCH = 512
LIST_BATCH = 10_000
# Milvus's sparse indices are u32 below 2**32 - 1; the one hash on that value folds onto another
SPARSE_MAX = 2**32 - 1
SEARCH_PARAMS = {"metric_type": "IP", "params": {"drop_ratio_search": 0.0}}  # every posting scored: exact BM25
LOCK_WAIT_S = 3.0  # how long an engine whose process just died may take to let go of its file
HELP_URL = "give a local .db file for the embedded engine, or a cluster's address such as http://localhost:19530"


def milvus_term(word: str) -> int:
    """A BM25 term's sparse index: :func:`rag.store.term_id` within Milvus's range."""
    return term_id(word) % SPARSE_MAX


@dataclass(frozen=True)
class Where:
    """Where the store lives: the embedded engine's file, or a cluster's URL."""

    file: Path | None = None
    url: str = ""

    def __str__(self) -> str:
        return str(self.file) if self.file else self.url


def where(index_root: Path, url: str) -> Where:
    """``RAG_STORE_URL`` read: empty is the embedded file under the index; http(s) a cluster; else a RagError naming it."""
    shown = f"RAG_STORE_URL={url!r}"
    if not url:
        return Where(file=index_root / LOCAL_FOLDER / LOCAL_FILE)
    if url != url.strip() or any(c.isspace() for c in url):
        raise RagError(f"{shown} holds spaces: {HELP_URL}")
    if "://" not in url:
        path = Path(url).expanduser()
        if path.suffix != ".db" or not re.fullmatch(r"[A-Za-z0-9._-]{1,36}", path.name):
            raise RagError(
                f"{shown} is neither a server address nor a .db file name of at most 36 letters, digits, '.', '_' or '-': {HELP_URL}"
            )
        return Where(file=path)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks the port (ValueError past 65535 or not a number)
    except ValueError as exc:
        raise RagError(f"{shown} is not a URL ({exc}): {HELP_URL}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RagError(f"{shown} is not an http(s) server address: {HELP_URL}")
    return Where(url=url)


def milvus_collection(root: Path) -> str:
    """A cluster's collection for the index at ``root``: Milvus names take letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", collection_name(root))


# ---------------------------------------------------------------- the embedded engine
def engine_binary() -> Path:
    """The Milvus server binary inside the installed milvus-lite wheel; a RagError when it is missing."""
    spec = importlib.util.find_spec("milvus_lite")
    if spec is None or not spec.submodule_search_locations:
        raise RagError("RAG_STORE=milvus needs the milvus extra: pip install 'newsrag[milvus]' (or unset RAG_STORE)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "lib" / "milvus"
    if not binary.is_file():
        raise RagError(
            f"the installed milvus-lite has no server binary at {binary}: install milvus-lite==2.4.12 (pip install 'newsrag[milvus]')"
        )
    return binary


def _lock(f) -> None:
    """Lock the engine's file, waiting a moment for an engine whose process just ended to let go of it."""
    # held while the engine runs: a second engine on the file would corrupt it. The binary waits on this
    # lock, so it exits when this process dies, however it dies, and holds it briefly then
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Engine:
    """Milvus's server binary started on a database file, as a child process; :meth:`stop` ends it."""

    # started directly rather than through milvus-lite's Python wrapper, which imports pkg_resources
    # (gone from current setuptools) and reports a failed start only as None

    def __init__(self, file: Path, address: str = "", timeout_s: float = 30.0) -> None:
        """Start the engine on ``file``: on a private socket, or listening at ``address`` (``host:port``) for other processes."""
        binary = engine_binary()
        if address and not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", address):
            raise RagError(f"the address {address!r} is not HOST:PORT, such as 127.0.0.1:19530")
        self.file = file.expanduser().resolve()
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagError(f"cannot make the folder of the Milvus store {self.file} ({exc.strerror})") from exc
        self._lock_path = self.file.parent / f".{self.file.name}.lock"
        self._lock = open(self._lock_path, "a")
        try:
            _lock(self._lock)
        except BlockingIOError as exc:
            self._lock.close()
            raise RagError(
                f"the embedded Milvus store {self.file} is open in another process; close it, "
                "or serve one engine to all of them (python -m rag.milvus_store FILE --address HOST:PORT) and set RAG_STORE_URL"
            ) from exc
        self._dir = tempfile.mkdtemp(prefix="newsrag-milvus-")  # a socket path must stay under ~100 characters
        self.uri = f"http://{address}" if address else f"unix:{self._dir}/engine.sock"
        args = [str(binary), str(self.file), address or self.uri, "ERROR", str(self._lock_path)]
        self._log = open(Path(self._dir) / "engine.log", "w+b")
        try:
            self.process = subprocess.Popen(
                args, env={"LD_LIBRARY_PATH": str(binary.parent)}, cwd=str(self.file.parent), stdout=self._log, stderr=self._log
            )
        except OSError as exc:
            self.stop()
            raise RagError(f"cannot start the Milvus engine {binary} ({exc.strerror or exc})") from exc
        self._wait_ready(address, timeout_s)

    def _wait_ready(self, address: str, timeout_s: float) -> None:
        import socket

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RagError(f"the Milvus engine on {self.file} stopped as it started (exit {self.process.returncode}): {tail}")
            try:
                if address:
                    host, port = address.rsplit(":", 1)
                    socket.create_connection((host, int(port)), timeout=0.2).close()
                else:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(self.uri[len("unix:") :])
                return
            except OSError:
                time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RagError(f"the Milvus engine on {self.file} did not start within {timeout_s:g} s (RAG_STORE_TIMEOUT_S): {tail}")

    def log_tail(self) -> str:
        """The engine's last log line, or a note that it wrote none."""
        try:
            self._log.seek(0)
            lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            lines = []
        return lines[-1].strip() if lines else "it wrote nothing"

    def stop(self) -> None:
        """End the engine (it flushes what was written) and release its file."""
        p = getattr(self, "process", None)
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._lock is not None and not self._lock.closed:
            fcntl.lockf(self._lock, fcntl.LOCK_UN)
            self._lock.close()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if hasattr(self, "_dir"):
            shutil.rmtree(self._dir, ignore_errors=True)


_OPEN: dict[str, tuple[MilvusClient, Engine | None]] = {}
_OPEN_LOCK = threading.Lock()


def connect(place: Where, settings: Settings) -> MilvusClient:
    """One client per file or URL in a process (an embedded file takes one engine at a time); the engine started if embedded."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise RagError("RAG_STORE=milvus needs the milvus extra: pip install 'newsrag[milvus]' (or unset RAG_STORE)") from exc
    key = str(place.file.expanduser().resolve()) if place.file else place.url
    with _OPEN_LOCK:
        if key in _OPEN:
            return _OPEN[key][0]
        engine = Engine(place.file, timeout_s=settings.store_timeout_s) if place.file else None
        try:
            client = MilvusClient(uri=engine.uri if engine else place.url, token=settings.store_token, timeout=settings.store_timeout_s)
        except Exception as exc:  # refused, unreachable, a bad token: pymilvus's own exception types
            if engine:
                engine.stop()
            raise RagError(f"cannot reach the Milvus store at {place}: {_reason(exc)}") from exc
        _OPEN[key] = (client, engine)
        return client


def _reason(exc: Exception) -> str:
    """pymilvus's message without its wrapping (``<MilvusException: (code=2, message=…)>``)."""
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(str(msg).split())[:300]


@atexit.register
def close_all() -> None:
    """Close every client and stop every engine this process started."""
    with _OPEN_LOCK:
        for client, engine in _OPEN.values():
            try:
                client.close()
            finally:
                if engine:
                    engine.stop()
        _OPEN.clear()


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
            raise RagError(f"cannot bring the Milvus store {place} in step with the index: {_reason(exc)}") from exc
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
            raise RagError(f"the Milvus store {self.collection} failed a search: {_reason(exc)}") from exc
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
    _ensure_collection(client, collection, index.manifest.dim or 384)
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


def _ensure_collection(client: MilvusClient, collection: str, dim: int) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """``python -m rag.milvus_store FILE [--address HOST:PORT]``: serve the embedded engine to other processes until stopped."""
    import argparse
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python -m rag.milvus_store", description=main.__doc__)
    p.add_argument("file", type=Path, help="the engine's .db file (created if missing)")
    p.add_argument("--address", default="127.0.0.1:19530", help="where it listens (default %(default)s)")
    args = p.parse_args(argv)
    try:
        engine = Engine(args.file, address=args.address)
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped as by Ctrl-C: the engine is ended, not orphaned
    print(f"serving {engine.file} at {engine.uri} (RAG_STORE=milvus RAG_STORE_URL={engine.uri})", flush=True)
    try:
        return engine.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        engine.stop()


if __name__ == "__main__":
    raise SystemExit(main())
