"""``rag bench scale``'s Milvus figures: the engine milvus-lite ships, embedded as ``RAG_STORE=milvus`` runs it."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 2_000  # rows per insert: a gRPC message stays well under the engine's 64 MB limit


def engine_mb(pid: int) -> int:
    """The engine process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def milvus_figures(vecs: np.ndarray, queries: np.ndarray, timed, top: int) -> dict:
    """Load ``vecs`` into the product's collection on a fresh embedded engine, then time dense top-30 searches of ``queries``."""
    # the rows carry every field RAG_STORE=milvus writes (an empty BM25 vector, one generation) and each
    # search the filter a reader sends, so the figures are what a question's dense search costs
    from pymilvus import MilvusClient

    from ..index.milvus import ALIVE, SEARCH_PARAMS, ensure_collection
    from ..index.milvus_engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Path(tmp) / "scale.db")
        try:
            client = MilvusClient(uri=engine.uri)
            t0 = time.perf_counter()
            ensure_collection(client, "scale", vecs.shape[1])
            base = {"chunk": "", "doc": "", "first": 1, "last": 1, "born": 1, "died": ALIVE, "has_dense": True, "bm25": {}}
            for lo in range(0, len(vecs), BATCH):
                rows = [{**base, "id": str(lo + i), "dense": v.tolist()} for i, v in enumerate(vecs[lo : lo + BATCH])]
                client.insert("scale", rows)
            row = {"milvus_build_s": round(time.perf_counter() - t0, 2)}
            expr = "born <= 1 and died > 1 and has_dense == true"

            def search(q: np.ndarray) -> None:
                client.search("scale", [q.tolist()], anns_field="dense", limit=top, filter=expr, search_params=SEARCH_PARAMS)

            row["milvus_p50_ms"], row["milvus_p95_ms"] = timed(search, queries)
            row["milvus_engine_mb"] = engine_mb(engine.process.pid)
            client.close()
        finally:
            engine.stop()
    return row
