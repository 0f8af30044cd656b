"""Indexing on a Ray cluster: load, clean, chunk and embed as a Ray Data pipeline.

``rag index PATH... --ray [ADDRESS]`` (``Settings.ray``) runs the two heavy stages of a write on
the cluster's workers instead of in this process:

1. **load and clean** each file in a Ray task (``map_batches`` over the listed files); the driver
   gets the cleaned documents back, which it needs anyway to mark duplicate reports across the
   whole corpus (:func:`rag.ingest.dedup.mark_duplicates`: a copy fills in its date from another, and
   the date is part of every passage's embedded text);
2. **chunk, embed and write** the marked articles in an actor pool (``map_batches`` with a class):
   each actor loads the embedder once, and each batch of articles becomes one immutable segment
   that the worker writes itself into the index folder, so vectors never travel back to the driver.

The driver then names the segments and publishes the generation as any write does
(:func:`rag.index.writer.update`): a driver killed at any point leaves the old index whole. The index
folder must be one every node reaches at the same path (a shared file system); on one machine it
is. The result is the index a local build makes, split in several segments: the same articles and
passages, vectors equal within the embedder's precision, the same BM25 scores.

Ray is an optional extra (``pip install "rag[ray]"``); nothing imports it unless ``Settings.ray`` is set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import socket
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from ..ingest.corpus import LoadResult, load_file, load_files
from ..settings import Settings
from ..types import Document, RagError
from . import embedding, segments

SegmentWrite = Callable[[Path, list[Document], Mapping[str, str], Settings], tuple[int, int]]

# A batch of articles becomes one segment: enough batches to keep every actor busy to the end
# (four each), none so small that a segment is mostly overhead, none so big that a worker holds
# too much at once.
BATCHES_PER_ACTOR = 4
MIN_SEGMENT_ARTICLES = 32
MAX_SEGMENT_ARTICLES = 5_000


def offline() -> None:
    """Keep Ray from reporting usage to its vendor and Ray Data from polling a metrics server (unless the user chose otherwise)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")


def connect(address: str, progress: bool = False) -> None:
    """Join the Ray cluster at ``address`` ("auto": the one this machine belongs to, else a new local one)."""
    offline()
    try:
        import ray
    except ImportError as exc:
        raise RagError('--ray needs Ray: pip install "rag[ray]" (or pip install "ray[data]")') from exc
    if not ray.is_initialized():
        if address != "auto":
            _reachable(address)
        try:
            ray.init(address=None if address == "auto" else address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RagError(f"cannot join the Ray cluster at {address} ({exc}); start one with `ray start --head`, or use --ray alone") from exc
    from ray.data import DataContext

    if not progress:  # Ray Data logs each dataset's start and end; a command line says what happened at the end
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    DataContext.get_current().enable_progress_bars = progress


def _reachable(address: str) -> None:
    """RagError unless something listens at the cluster's address: Ray itself retries for minutes."""
    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise RagError(f"--ray {address}: give a cluster's HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), or --ray alone")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise RagError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with `ray start --head`, or use --ray alone") from exc


def _cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ---------------------------------------------------------------- stage 1: load and clean
def load(files: list[Path], max_bytes: int, fields: Mapping[Path, Mapping[str, str] | None]) -> LoadResult:
    """:func:`rag.ingest.corpus.load_files` (``mark=False``), each file loaded and cleaned by a Ray task.

    The workers run :func:`rag.ingest.corpus.load_file`; ``load_files`` then puts the results together as
    it does locally (the same order, the same refusal of two files of one name).
    """
    import ray

    loaded: dict[Path, LoadResult] = {}
    if files:
        rows = [{"path": str(f), "fields": json.dumps(dict(fields.get(f) or {}))} for f in files]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * _cpus()))
        for row in ds.map_batches(_load_batch, batch_size=8, fn_kwargs={"max_bytes": max_bytes}).iter_rows():
            loaded[Path(row["path"])] = pickle.loads(row["result"])
    return load_files(files, max_bytes, mark=False, fields=fields, loaded=loaded)


def _load_batch(batch: dict[str, np.ndarray], max_bytes: int) -> dict[str, list]:
    """Load and clean a batch of files on a worker: one pickled LoadResult per file."""
    results = [pickle.dumps(load_file(Path(str(p)), max_bytes, json.loads(str(f)) or None)) for p, f in zip(batch["path"], batch["fields"])]
    return {"path": list(batch["path"]), "result": results}


# ---------------------------------------------------------------- stage 2: chunk, embed, write segments
def write_segments(
    root: Path, docs: list[Document], record_raws: Mapping[str, str], settings: Settings, write: SegmentWrite
) -> tuple[list[str], int, int]:
    """Chunk, embed and write articles read now (marked, in id order) as segments, on the cluster's actors.

    ``write(folder, docs, record_raws, settings)`` makes one segment of a batch
    (:func:`rag.index.write_fresh_segment`, passed in so that this module does not import the
    index's). Returns the temporary folder names the workers wrote under ``root/segments`` (in
    article order), their passages and the passages embedded.
    """
    import ray
    from ray.data import ActorPoolStrategy

    if not docs:
        return [], 0, 0
    actors = max(1, int(_cpus() // max(settings.ray_actor_cpus, 1)))
    per = min(MAX_SEGMENT_ARTICLES, max(MIN_SEGMENT_ARTICLES, math.ceil(len(docs) / (actors * BATCHES_PER_ACTOR))))
    rows = [{"doc": pickle.dumps(d), "raw": record_raws.get(d.id, ""), "has_raw": d.id in record_raws} for d in docs]
    ds = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per))
    written = ds.map_batches(
        _SegmentWriter,
        batch_size=per,
        fn_constructor_kwargs={"root": str(root), "settings": settings, "write": write},
        compute=ActorPoolStrategy(size=min(actors, math.ceil(len(docs) / per))),
        num_cpus=settings.ray_actor_cpus,
        num_gpus=settings.ray_actor_gpus or None,
    )
    out = sorted((str(r["first"]), str(r["tmp"]), int(r["chunks"]), int(r["embedded"])) for r in written.iter_rows())
    return [t for _, t, _, _ in out], sum(c for _, _, c, _ in out), sum(e for _, _, _, e in out)


class _SegmentWriter:
    """An actor of the pool: loads the embedder once, then turns each batch of articles into a segment folder."""

    def __init__(self, root: str, settings: Settings, write: SegmentWrite) -> None:
        import ray

        self.root, self.settings, self.write = Path(root), settings, write
        model = embedding.model()
        if ray.get_gpu_ids():  # an actor given a GPU embeds on it
            model.to("cuda")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        docs: list[Document] = [pickle.loads(b) for b in batch["doc"]]
        raws = {d.id: str(r) for d, r, has in zip(docs, batch["raw"], batch["has_raw"]) if has}
        tmp = self.root / segments.SEGMENTS_DIR / f".tmp-ray-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        n_chunks, embedded = self.write(tmp, docs, raws, self.settings)
        return {"first": [min(d.id for d in docs)], "tmp": [tmp.name], "chunks": [n_chunks], "embedded": [embedded]}
