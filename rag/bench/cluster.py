"""`rag bench ray`: indexing throughput on a Ray cluster of 1, 2, ... nodes, against a build in this process.

Each run starts a fresh local cluster (``ray.cluster_utils.Cluster``: every node a separate raylet
on 127.0.0.1 with ``--cpus-per-node`` CPUs), builds a new index of the given articles on it with
``--ray``, and stops the cluster; the in-process build comes first. On one machine the nodes share
its cores, so the figures show how the pipeline scales with workers, not a real network's cost.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ..index.distributed import offline
from ..index.layout import Manifest, current_name
from ..index.writer import build
from ..measure import peak_rss_mb
from ..settings import Settings
from ..types import RagError


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ray`` under ``rag bench``."""
    p = bench_subparsers.add_parser("ray", help="indexing throughput on a local Ray cluster of 1, 2, ... nodes (needs the ray extra)")
    p.add_argument("paths", nargs="+", help="article files or folders to index")
    p.add_argument("--nodes", default="1,2", help="cluster sizes to measure, comma-separated (default 1,2)")
    p.add_argument("--cpus-per-node", type=int, default=1, help="CPUs each node offers (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _build(paths: list[str], settings: Settings) -> dict:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        report = build(Path(d) / "index", paths, settings)
        seconds = time.perf_counter() - t0
        segments = len(Manifest.read(Path(d) / "index" / current_name(Path(d) / "index")).segments)
    if report.errors:
        raise RagError(f"{len(report.errors)} files not indexed, the first: {report.errors[0]}")
    return {
        "articles": len(report.added),
        "passages": report.n_chunks,
        "embedded": report.embedded_chunks,
        "segments": segments,
        "seconds": round(seconds, 1),
        "passages_per_s": round(report.n_chunks / seconds, 1),
    }


def run(args: argparse.Namespace) -> int:
    offline()
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError as exc:
        raise RagError('rag bench ray needs Ray: pip install "rag[ray]"') from exc
    try:
        sizes = [int(n) for n in args.nodes.split(",")]
    except ValueError as exc:
        raise RagError(f"--nodes {args.nodes!r}: give cluster sizes such as 1,2") from exc
    if not sizes or min(sizes) < 1 or max(sizes) > 16 or args.cpus_per_node < 1:
        raise RagError("--nodes takes sizes from 1 to 16, and --cpus-per-node at least 1")
    rows = [{"run": "this process (no Ray)", **_build(args.paths, Settings.from_env(ray=""))}]
    for n in sizes:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus_per_node, "include_dashboard": False})
        try:
            for _ in range(n - 1):
                cluster.add_node(num_cpus=args.cpus_per_node)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            rows.append({"run": f"Ray, {n} node{'s' * (n > 1)} x {args.cpus_per_node} CPU", **_build(args.paths, Settings.from_env(ray=cluster.address))})
        finally:
            ray.shutdown()
            cluster.shutdown()
    result = {"rows": rows, "peak_rss_mb": round(peak_rss_mb())}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("| run | articles | passages | segments | seconds | passages/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['articles']:,} | {r['passages']:,} | {r['segments']} | {r['seconds']} | {r['passages_per_s']} |")
    print(f"\npeak memory of this process {result['peak_rss_mb']:,} MB (the Ray workers' not included)")
    return 0
