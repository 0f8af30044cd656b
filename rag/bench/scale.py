"""`rag bench scale`: what the embedded store costs as a corpus grows to a million passages.

Corpora are drawn from a real index (``--index``, e.g. the one ``rag bench realtimeqa`` builds):

- **vectors**: each synthetic passage is a real passage's vector plus Gaussian noise (cosine about
  0.9 to its source), renormalised, so neighbourhoods look like news, not like uniform noise.
  Nothing is embedded here: the embedder's cost is measured by ``rag bench realtimeqa`` and
  ``rag bench ray`` (passages per second, linear in the corpus), and this measures the store's own;
- **texts**: each synthetic passage joins four sentences drawn at random from the real passages,
  BM25-indexed as one segment would be (:class:`rag.index.segments.Terms`, :class:`rag.index.segments.SegmentedBM25`).

Each size reports, for exact search (FAISS flat inner product) and the product's approximate index
(:mod:`rag.index.ann`: FAISS IVF with ``nlist = 4 * sqrt(n)`` lists, at most n / 39, ``--nprobe`` of them
searched; its training, assignment and per-generation assembly timed apart), memory of the vectors,
one query's p50/p95 (the top 30, as hybrid retrieval asks), and the approximate index's recall@10
against exact search; embedded Qdrant's load and query time up to ``--qdrant-max`` passages; the embedded
Milvus engine's (:mod:`rag.bench.scale_milvus`) load, query time and memory up to ``--milvus-max``; and
BM25's build time and query p50/p95.
Queries are other real vectors with fresh noise, and the words of real passages.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path

import numpy as np

from ..measure import peak_rss_mb, percentile
from ..settings import Settings
from ..types import RagError

NOISE_COSINE = 0.9  # a synthetic vector's cosine to the real one it comes from
TOP = 30  # passages each search returns (HybridRetriever's candidate depth)


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = bench_subparsers.add_parser("scale", help="store cost against corpus size (10k, 100k, 1M passages): exact and approximate search, BM25")
    p.add_argument("--index", dest="index_dir", default=None, help="the index whose passages and vectors are resampled (default: $RAG_INDEX_DIR or index/)")
    p.add_argument("--sizes", default="10000,100000,1000000", help="corpus sizes in passages, comma-separated (default 10000,100000,1000000)")
    p.add_argument("--queries", type=int, default=100, help="queries per size (default 100)")
    p.add_argument("--nprobe", type=int, default=32, help="IVF lists searched per query (default 32)")
    p.add_argument(
        "--qdrant-max",
        type=int,
        default=20_000,
        metavar="N",
        help="measure embedded Qdrant up to N passages (0: never; default 20000: its local mode searches in Python, a server is for more)",
    )
    p.add_argument(
        "--milvus-max",
        type=int,
        default=100_000,
        metavar="N",
        help="measure the embedded Milvus engine up to N passages (0: never; default 100000)",
    )
    p.add_argument("--out", default=None, help="folder for scale.md, scale.json and scale.png")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _vectors(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    sigma = math.sqrt((1 / NOISE_COSINE**2 - 1) / base.shape[1])
    out = np.empty((n, base.shape[1]), np.float32)
    for lo in range(0, n, 100_000):  # in steps: the noise of a million rows at once would double the peak
        hi = min(n, lo + 100_000)
        block = base[rng.integers(0, len(base), hi - lo)] + rng.normal(0, sigma, (hi - lo, base.shape[1])).astype(np.float32)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _timed(search, queries) -> tuple[float, float]:
    ms = []
    for q in queries:
        t0 = time.perf_counter()
        search(q)
        ms.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(ms), 2), round(percentile(ms, 0.95), 2)


def _vector_figures(n: int, base: np.ndarray, n_queries: int, nprobe: int, seed: int) -> dict:
    """Exact search and the product's IVF (:mod:`rag.index.ann`, as ``RAG_VECTOR_INDEX=ivf`` builds it) over ``n`` synthetic vectors."""
    import faiss

    from ..index import ann

    rng = np.random.default_rng(seed)
    row: dict = {}
    vecs = _vectors(base, n, rng)
    queries = _vectors(base, n_queries, np.random.default_rng(seed + 1))
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(vecs.shape[1])
    flat.add(vecs)
    row["flat_build_s"] = round(time.perf_counter() - t0, 2)
    row["flat_mb"] = round(vecs.nbytes / 1e6)
    row["flat_p50_ms"], row["flat_p95_ms"] = _timed(lambda q: flat.search(q[None], TOP), queries)
    _, exact = flat.search(queries, 10)
    nlist = ann.n_lists(n)
    t0 = time.perf_counter()
    centroids = ann.train(vecs, nlist)
    row["ivf_train_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    lists = ann.assign(centroids, vecs)
    row["ivf_assign_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()  # what opening a generation costs once every segment's lists are cached
    search = ann.IVFSearch(ann.build(centroids, vecs, lists), vecs, nprobe)
    row["ivf_open_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()  # what a write of ~10 articles (100 vectors) adds: their assignment alone
    ann.assign(centroids, vecs[:100])
    row["ivf_add100_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    row["ivf_build_s"] = round(row["ivf_train_s"] + row["ivf_assign_s"] + row["ivf_open_s"], 2)
    row["ivf_nlist"], row["ivf_nprobe"] = nlist, search.nprobe
    row["ivf_mb"] = round((vecs.nbytes + 8 * n) / 1e6)  # its lists hold their own copy of the vectors, and an id each
    row["ivf_cache_mb"] = round((centroids.nbytes + lists.nbytes) / 1e6, 1)  # on disk in <index>/ann/: centroids, a list number a vector
    row["ivf_p50_ms"], row["ivf_p95_ms"] = _timed(lambda q: search.search(q, TOP), queries)
    approx = [[r for r, _ in search.search(q, 10)] for q in queries]
    row["ivf_recall@10"] = round(float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact.tolist())])), 4)
    return row


def _qdrant_figures(n: int, base: np.ndarray, n_queries: int, seed: int) -> dict:
    """Embedded Qdrant (qdrant-client's local mode, as ``RAG_STORE=qdrant`` without a URL) over ``n`` synthetic vectors."""
    import tempfile

    from qdrant_client import QdrantClient, models

    from ..index.store import DENSE, UPSERT_BATCH

    vecs = _vectors(base, n, np.random.default_rng(seed))
    queries = _vectors(base, n_queries, np.random.default_rng(seed + 1))
    with tempfile.TemporaryDirectory() as tmp:
        client = QdrantClient(path=tmp)
        try:
            t0 = time.perf_counter()
            client.create_collection("scale", vectors_config={DENSE: models.VectorParams(size=vecs.shape[1], distance=models.Distance.DOT)})
            for lo in range(0, n, UPSERT_BATCH):
                block = vecs[lo : lo + UPSERT_BATCH]
                client.upsert("scale", [models.PointStruct(id=lo + i, vector={DENSE: v.tolist()}) for i, v in enumerate(block)], wait=True)
            row = {"qdrant_build_s": round(time.perf_counter() - t0, 2)}
            row["qdrant_p50_ms"], row["qdrant_p95_ms"] = _timed(
                lambda q: client.query_points("scale", query=q.tolist(), using=DENSE, limit=TOP, with_payload=False), queries
            )
        finally:
            client.close()
    return row


def measure_size(
    n: int, base: np.ndarray, sentences: list[str], n_queries: int, nprobe: int, seed: int = 0, qdrant_max: int = 0, milvus_max: int = 0
) -> dict:
    """Every figure for one corpus size (embedded Qdrant's up to ``qdrant_max`` passages, embedded Milvus's up to ``milvus_max``)."""
    from ..index.retrieval import bm25_top
    from ..index.segments import SegmentedBM25, Terms

    row = {"passages": n, **_vector_figures(n, base, n_queries, nprobe, seed)}
    if n <= qdrant_max:
        row.update(_qdrant_figures(n, base, n_queries, seed))
    if n <= milvus_max:
        from .scale_milvus import milvus_figures

        vecs, queries = _vectors(base, n, np.random.default_rng(seed)), _vectors(base, n_queries, np.random.default_rng(seed + 1))
        row.update(milvus_figures(vecs, queries, _timed, TOP))
    pick = random.Random(seed)
    texts = [" ".join(pick.choices(sentences, k=4)) for _ in range(n)]
    t0 = time.perf_counter()
    terms = Terms.of(texts)
    bm25 = SegmentedBM25([(terms, np.arange(n))])
    row["bm25_build_s"] = round(time.perf_counter() - t0, 2)
    row["bm25_mb"] = round((terms.rows.nbytes + terms.tf.nbytes + terms.indptr.nbytes + terms.lengths.nbytes) / 1e6)
    questions = [pick.choice(sentences) for _ in range(n_queries)]

    row["bm25_p50_ms"], row["bm25_p95_ms"] = _timed(lambda q: bm25_top(bm25, q, TOP), questions)
    row["peak_rss_mb"] = round(peak_rss_mb())
    return row


def _sources(index_dir: str) -> tuple[np.ndarray, list[str]]:
    from ..index.reader import Index
    from ..text import sentence_spans

    idx = Index.open(index_dir)
    base = idx.vector_matrix()
    if len(base) < 10:
        raise RagError(f"the index at {index_dir}/ has {len(base)} vectors; resample a bigger one (--index), e.g. the one `rag bench realtimeqa` builds")
    sentences = [c.text[s:e] for c in idx.chunks for s, e in sentence_spans(c.text) if e - s > 20]
    return base, sentences


def run(args: argparse.Namespace) -> int:
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError as exc:
        raise RagError(f"--sizes {args.sizes!r}: give passage counts such as 10000,100000") from exc
    if not sizes or min(sizes) < 100 or max(sizes) > 5_000_000 or not 1 <= args.queries <= 10_000:
        raise RagError("--sizes take 100 to 5,000,000 passages, and --queries 1 to 10,000")
    settings = Settings.from_env(index_dir=args.index_dir)
    base, sentences = _sources(settings.index_dir)
    if args.qdrant_max:
        try:
            import qdrant_client  # noqa: F401
        except ImportError as exc:
            raise RagError("--qdrant-max needs the qdrant extra: pip install 'newsrag[qdrant]' (or --qdrant-max 0)") from exc
    if args.milvus_max:
        from ..index.milvus_engine import engine_binary

        engine_binary()  # a RagError naming the milvus extra when it is missing
    rows = [measure_size(n, base, sentences, args.queries, args.nprobe, qdrant_max=args.qdrant_max, milvus_max=args.milvus_max) for n in sizes]
    result = {"index": settings.index_dir, "base_vectors": len(base), "base_sentences": len(sentences), "rows": rows}
    md = markdown(result)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scale.md").write_text(md + "\n")
        (out / "scale.json").write_text(json.dumps(result, indent=1))
        chart(rows, out / "scale.png")
    print(json.dumps(result, indent=1) if args.json else md)
    return 0


def markdown(result: dict) -> str:
    lines = [
        f"Resampled from {result['base_vectors']:,} vectors and {result['base_sentences']:,} sentences of {result['index']}/.",
        "",
        "| passages | flat: MB | flat: p50 / p95 ms | IVF: train / assign / open s | IVF: +100 vectors ms | IVF: p50 / p95 ms | IVF recall@10 | IVF: MB in memory / cache on disk "
        "| Qdrant embedded: build s | Qdrant: p50 / p95 ms | Milvus embedded: build s | Milvus: p50 / p95 ms | Milvus engine MB "
        "| BM25: build s | BM25: MB | BM25: p50 / p95 ms | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        qdrant = f"{r['qdrant_build_s']} | {r['qdrant_p50_ms']} / {r['qdrant_p95_ms']}" if "qdrant_p50_ms" in r else "— | —"
        milvus = f"{r['milvus_build_s']} | {r['milvus_p50_ms']} / {r['milvus_p95_ms']} | {r['milvus_engine_mb']:,}" if "milvus_p50_ms" in r else "— | — | —"
        lines.append(
            f"| {r['passages']:,} | {r['flat_mb']:,} | {r['flat_p50_ms']} / {r['flat_p95_ms']} "
            f"| {r['ivf_train_s']} / {r['ivf_assign_s']} / {r['ivf_open_s']} | {r['ivf_add100_ms']} "
            f"| {r['ivf_p50_ms']} / {r['ivf_p95_ms']} | {r['ivf_recall@10']} | {r['ivf_mb']:,} / {r['ivf_cache_mb']} | {qdrant} | {milvus} | {r['bm25_build_s']} | {r['bm25_mb']:,} "
            f"| {r['bm25_p50_ms']} / {r['bm25_p95_ms']} | {r['peak_rss_mb']:,} |"
        )
    lines += [
        "",
        "IVF is rag.index.ann as RAG_VECTOR_INDEX=ivf builds it: k-means once per index (train), each segment's vectors assigned "
        "to their lists once and cached (assign), a generation's lists put together from the cached assignments (open); "
        "a write assigns only its new vectors (+100 vectors). Qdrant embedded is qdrant-client's local mode, which searches "
        "in Python: a Qdrant server or cluster is what serves a large corpus. Milvus embedded is the engine milvus-lite ships "
        "(RAG_STORE=milvus without a URL), a separate process: its memory is that process's peak, not in peak MB.",
    ]
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> Path:
    """Query time and memory against corpus size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["passages"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (
        ("flat_p50_ms", "exact (FAISS flat)"),
        ("ivf_p50_ms", "approximate (FAISS IVF, rag.index.ann)"),
        ("qdrant_p50_ms", "Qdrant embedded"),
        ("milvus_p50_ms", "Milvus embedded"),
        ("bm25_p50_ms", "BM25"),
    ):
        have = [(x, r[key]) for x, r in zip(n, rows) if key in r]
        if have:
            a.plot(*zip(*have), marker="o", label=label)
    a.set(xscale="log", yscale="log", xlabel="passages", ylabel="query p50, ms", title="one query")
    a.legend(fontsize=7)
    for key, label in (("flat_mb", "vectors (float32)"), ("bm25_mb", "BM25 postings")):
        b.plot(n, [r[key] for r in rows], marker="o", label=label)
    b.set(xscale="log", yscale="log", xlabel="passages", ylabel="MB", title="memory")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
