"""Approximate nearest-neighbour search for large indexes: FAISS IVF lists over the index's own vectors.

``RAG_VECTOR_INDEX`` chooses how the dense retriever searches:

- ``flat``: the exhaustive inner product over every vector (exact);
- ``ivf``: FAISS ``IndexIVFFlat``, the ``RAG_IVF_NPROBE`` nearest of ``nlist = 4 * sqrt(n)`` k-means
  lists searched (the layout ``rag bench scale`` measures: recall@10 0.995 to 1.000 from 10k to 1M
  passages, a query 1.1 ms instead of 165 ms at 1M);
- ``auto`` (the default): ``flat`` below :data:`AUTO_IVF_VECTORS` vectors, ``ivf`` from there on.

The IVF follows the index's own shape: an index grows in immutable segments, so the lists are put
together from per-segment parts. The k-means centroids are trained once for an index and kept in
``<index>/ann/centroids.npz``; each segment's vectors are assigned to their lists once, and that
assignment is kept beside them under the segment's name. Opening a generation then fills the lists
from the cached assignments (a copy: no k-means, no distances), and a write of ten articles costs
the assignment of their vectors alone. The centroids are trained again once the index has grown
past :data:`RETRAIN_GROWTH` times the count they were trained on (the lists grow long, queries slow).

FAISS itself has no notion of segments shared between generations, which is why this assembly is
ours. The cache is derived data: whatever is missing or damaged is rebuilt, never an error, and where
the index folder cannot be written the lists live in memory only.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..files import published
from ..types import RagError

if TYPE_CHECKING:
    from ..settings import Settings
    from .reader import Index

log = logging.getLogger(__name__)

# auto turns to IVF here: exact search over 100k vectors takes ~17 ms a query on 2 cores (rag bench scale),
# near the 20 ms a query may cost; below it exact search is fast enough and loses nothing.
AUTO_IVF_VECTORS = 100_000
LISTS_PER_SQRT = 4  # nlist = 4 * sqrt(n), FAISS's rule of thumb for IVF
TRAIN_POINTS_PER_LIST = 64  # k-means sample; FAISS wants at least 39 points a list
MIN_POINTS_PER_LIST = 39
RETRAIN_GROWTH = 4.0  # 4x the trained count: lists twice as long as nlist = 4 * sqrt(n) would make them
# A date range keeping at most this many vectors is searched exactly: as fast as probing the lists,
# and an IVF probe of nprobe lists could hold too few of the kept vectors to fill the top k.
EXACT_BELOW = 20_000
ANN_DIR = "ann"


def choice(settings: Settings, n_vectors: int) -> str:
    """``flat`` or ``ivf`` for an index of ``n_vectors``; ``settings.vector_index`` is one of its choices (Settings refuses others)."""
    name = settings.vector_index
    if settings.ivf_nprobe < 1:
        raise RagError(f"RAG_IVF_NPROBE={settings.ivf_nprobe} must be a whole number of at least 1")
    if name == "auto":
        return "ivf" if n_vectors >= AUTO_IVF_VECTORS else "flat"
    return name


def n_lists(n: int) -> int:
    return max(1, min(int(LISTS_PER_SQRT * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


class IVFSearch:
    """Top-k inner-product search over an index generation's vector rows through IVF lists."""

    def __init__(self, ivf, vectors: np.ndarray, nprobe: int) -> None:
        self.ivf = ivf
        self.vectors = vectors  # row r of the generation, for the exact search of a small date range
        self.nprobe = min(nprobe, ivf.nlist)

    def search(self, qvec: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``k`` best rows (best first, ties in row order), only among ``keep`` (a mask over rows) when given."""
        import faiss

        n = self.ivf.ntotal
        kept = n if keep is None else int(keep.sum())
        k = min(k, kept)
        if k <= 0:
            return []
        if keep is not None and kept <= max(EXACT_BELOW, k):
            return self._exact(qvec, k, keep)
        params = faiss.SearchParametersIVF()
        params.nprobe = self.nprobe
        if keep is not None:
            bits = np.packbits(keep, bitorder="little")  # faiss reads bit i of byte i >> 3, low bit first
            params.sel = selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))  # noqa: F841 (kept alive for the call)
        scores, rows = self.ivf.search(np.ascontiguousarray(qvec[None], dtype=np.float32), k, params=params)
        got = rows[0] >= 0
        if got.sum() < k and keep is not None:  # the probed lists held too few of the kept rows
            return self._exact(qvec, k, keep)
        rows, scores = rows[0][got], scores[0][got]
        order = np.lexsort((rows, -scores))
        return [(int(rows[i]), float(scores[i])) for i in order]

    def _exact(self, qvec: np.ndarray, k: int, keep: np.ndarray) -> list[tuple[int, float]]:
        """Exhaustive search among the ``keep`` rows: the few kept rows alone, or every row with the rest masked out."""
        if keep.sum() <= EXACT_BELOW:
            rows = np.flatnonzero(keep)
            return best(self.vectors[rows] @ qvec, k, rows)
        scores = np.einsum("ij,j->i", self.vectors, qvec)  # a copy of most rows would cost more than scoring them all
        scores[~keep] = -np.inf
        return best(scores, k)


def best(scores: np.ndarray, k: int, rows: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The ``k`` highest scores as (row, score), best first, equal scores in row order (``rows[i]`` is score i's row)."""
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    ids = top if rows is None else rows[top]
    order = np.lexsort((ids, -scores[top]))  # identical vectors (a passage repeated word for word) in row order
    return [(int(ids[i]), float(scores[top[i]])) for i in order]


def open_ivf(index: Index, vectors: np.ndarray, settings: Settings) -> IVFSearch | None:
    """The IVF search over ``vectors`` (the rows of ``index``) when ``settings`` choose it (None: search exactly)."""
    if choice(settings, len(vectors)) != "ivf" or len(vectors) == 0:
        return None
    folder = index.root / ANN_DIR
    centroids = _centroids(folder, vectors, f"{index.manifest.embedder}/{index.manifest.precision}")
    key = hashlib.blake2b(centroids.tobytes(), digest_size=8).hexdigest()
    lists = np.concatenate([_assignment(folder / key, index, name, centroids)[rows] for name, rows in index.vector_blocks])
    _prune(folder, key, {name for name, _ in index.vector_blocks})
    return IVFSearch(build(centroids, vectors, lists), vectors, settings.ivf_nprobe)


def train(vectors: np.ndarray, nlist: int) -> np.ndarray:
    """``nlist`` k-means centroids (unit length, for inner product) from a fixed sample of ``vectors``."""
    import faiss

    n, dim = vectors.shape
    log.info("training %d IVF lists on %d vectors (once for this index)", nlist, n)
    rng = np.random.default_rng(0)  # the same index trains the same centroids
    sample = vectors[np.sort(rng.choice(n, min(n, TRAIN_POINTS_PER_LIST * nlist), replace=False))]
    km = faiss.Kmeans(dim, nlist, niter=20, spherical=True, seed=1, max_points_per_centroid=TRAIN_POINTS_PER_LIST)
    km.train(np.ascontiguousarray(sample, dtype=np.float32))
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(centroids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The list (nearest centroid) of each vector."""
    import faiss

    quantizer = faiss.IndexFlatIP(centroids.shape[1])
    quantizer.add(centroids)
    out = np.zeros(len(vectors), np.int32)  # 4 bytes a vector on disk: lists number far below 2**31
    for lo in range(0, len(vectors), 65_536):  # in blocks: the distance table of a whole big segment is large
        _, nearest = quantizer.search(np.ascontiguousarray(vectors[lo : lo + 65_536], dtype=np.float32), 1)
        out[lo : lo + len(nearest)] = nearest[:, 0]
    return out


def build(centroids: np.ndarray, vectors: np.ndarray, lists: np.ndarray):
    """A FAISS ``IndexIVFFlat`` holding ``vectors`` (ids = rows) in the given ``lists``: a copy, no distances computed."""
    import faiss

    nlist, dim = centroids.shape
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(centroids)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)  # keeps a reference to its quantizer
    ivf.is_trained = True
    # named arrays: a swig pointer does not keep its array alive, so no temporary may be passed
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.arange(len(x), dtype=np.int64)
    where = np.ascontiguousarray(lists, dtype=np.int64)
    ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(where))
    return ivf


def _centroids(folder: Path, vectors: np.ndarray, embedder: str) -> np.ndarray:
    """The index's k-means centroids: the cached ones while the index is within RETRAIN_GROWTH of their count
    and embedded the same way (vectors of another embedder cluster elsewhere)."""
    path = folder / "centroids.npz"
    n = len(vectors)
    try:
        with np.load(path) as z:
            centroids, trained_on, made_by = z["centroids"], int(z["trained_on"]), str(z["embedder"])
        fits = centroids.ndim == 2 and centroids.shape[1] == vectors.shape[1] and made_by == embedder
        if fits and n <= RETRAIN_GROWTH * trained_on:
            return np.ascontiguousarray(centroids, dtype=np.float32)
    except FileNotFoundError:
        pass
    except Exception as exc:  # damaged: derived data, trained again
        log.warning("ann cache %s is unreadable (%s); training the IVF centroids again", path, exc)
    centroids = train(vectors, n_lists(n))
    _save(path, lambda fh: np.savez(fh, centroids=centroids, trained_on=np.int64(n), embedder=np.str_(embedder)))
    return centroids


def _assignment(folder: Path, index: Index, name: str, centroids: np.ndarray) -> np.ndarray:
    """The IVF list of every vector row of segment ``name`` (cached by the segment's name and vectors file)."""
    from . import segments

    seg = index.root / segments.SEGMENTS_DIR / name
    stat = (seg / "vectors.npy").stat()
    path = folder / f"{name}-{stat.st_size}-{stat.st_mtime_ns}.npy"  # a segment written again under a reused name misses
    vectors = segments.read_vectors(seg, mmap=True)
    try:
        cached = np.load(path)
        if cached.shape == (len(vectors),) and (not len(cached) or 0 <= cached.min() <= cached.max() < len(centroids)):
            return cached
    except FileNotFoundError:
        pass
    except Exception as exc:
        log.warning("ann cache %s is unreadable (%s); assigning the segment's vectors again", path, exc)
    lists = assign(centroids, vectors)
    _save(path, lambda fh: np.save(fh, lists))
    return lists


def _save(path: Path, write) -> None:
    """Publish a cache file whole; a folder that cannot be written keeps the cache in memory only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with published(path) as tmp, open(tmp, "wb") as fh:
            write(fh)
    except OSError as exc:
        log.info("ann cache %s not written (%s): kept in memory only", path, exc)


def _prune(folder: Path, key: str, live: set[str]) -> None:
    """Drop assignments of centroids no longer used, and of segments this generation no longer lists.

    A reader of an older generation already holds its lists in memory, so nothing it needs is lost.
    """
    if not folder.is_dir():
        return
    try:
        for p in folder.iterdir():
            if p.is_dir() and p.name != key:
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir():
                for f in p.iterdir():
                    if f.name.rsplit("-", 2)[0] not in live:
                        f.unlink(missing_ok=True)
    except OSError:
        pass
