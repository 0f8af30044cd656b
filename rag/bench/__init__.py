"""``rag bench``: the benchmarks, apart from the library they measure (nothing in ``rag`` imports them).

- ``latency``: warm answer time against llama-index's CitationQueryEngine (:mod:`rag.bench.latency`);
- ``realtimeqa``: retrieval and answers on RealTime QA news (:mod:`rag.bench.realtimeqa`, data in :mod:`rag.bench.rtqa_data`);
- ``load``: concurrent questions through the API, the UI's queue and ``rag serve`` (:mod:`rag.bench.load`);
- ``ray``: indexing throughput on a local Ray cluster of 1, 2, ... nodes (:mod:`rag.bench.cluster`);
- ``decision``: fit when an answer stands on recorded RealTime QA runs (:mod:`rag.bench.decision`);
- ``scale``: the store's cost against corpus size up to a million passages (:mod:`rag.bench.scale`).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` and its subcommands to the ``rag`` command's subparsers."""
    from . import cluster, decision, latency, load, realtimeqa, scale

    p = subparsers.add_parser("bench", help="benchmarks")
    sub = p.add_subparsers(dest="bench_cmd", required=True)
    latency.add_parser(sub)
    load.add_parser(sub)
    realtimeqa.add_parser(sub)
    cluster.add_parser(sub)
    scale.add_parser(sub)
    decision.add_parser(sub)


def run(args: argparse.Namespace) -> int:
    """Run the ``rag bench`` subcommand named in ``args``."""
    from . import cluster, decision, latency, load, realtimeqa, scale

    return {"decision": decision.run, "latency": latency.run, "load": load.run, "realtimeqa": realtimeqa.run, "ray": cluster.run, "scale": scale.run}[args.bench_cmd](args)
