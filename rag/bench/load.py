"""`rag bench load`: many concurrent questions through the Python API, the UI server's queue and ``rag serve``.

Bounded in requests and time, on 127.0.0.1 only, with the extractive backend (no LLM), so it
measures the system around the model: every request must come back answered (with the answer
to its own question) or refused with a clear "busy" message; none may be lost or fail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ..eval import load_questions
from ..measure import peak_rss_mb, percentile
from ..settings import Settings
from ..types import RagError

if TYPE_CHECKING:
    from ..api import RAG

FALLBACK_QUESTIONS = [
    "Why did ties between Iran and Hamas break down in 2012?",
    "Which country helped broker the reconciliation between Hamas and Iran in 2014?",
    "Who declared that Hamas had formed a joint command with Islamic Jihad?",
    "What is the capital of Australia?",
]


@dataclass
class LoadResult:
    path: str
    requests: int
    concurrency: int
    answered: int = 0
    refused_busy: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        lat = self.latencies
        d = {k: v for k, v in asdict(self).items() if k != "latencies"}
        d["failures"] = self.failures[:5]
        d["p50_s"] = round(statistics.median(lat), 3) if lat else None
        d["p95_s"] = round(percentile(lat, 0.95), 3) if lat else None
        d["throughput_rps"] = round(self.answered / self.wall_s, 2) if self.wall_s else None
        d["wall_s"] = round(self.wall_s, 2)
        return d


def _drive(path: str, questions: list[str], requests: int, concurrency: int, ask_one) -> LoadResult:
    """Send ``requests`` questions from ``concurrency`` workers; ``ask_one(worker, q)`` returns
    "answered", "busy" or a failure description."""
    res = LoadResult(path, requests, concurrency)
    lock = threading.Lock()
    local = threading.local()

    def one(i: int) -> None:
        q = questions[i % len(questions)]
        t0 = time.perf_counter()
        try:
            outcome = ask_one(local, q)
        except Exception as exc:  # counted, never lost: the point of the test
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            if outcome == "answered":
                res.answered += 1
                res.latencies.append(time.perf_counter() - t0)
            elif outcome == "busy":
                res.refused_busy += 1
            else:
                res.failed += 1
                res.failures.append(outcome)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    res.wall_s = time.perf_counter() - t0
    return res


def api_load(rag: RAG, questions: list[str], requests: int, concurrency: int) -> LoadResult:
    """Concurrent ``rag.ask`` calls from threads of one process."""

    def ask_one(_local: threading.local, q: str) -> str:
        try:
            a = rag.ask(q, llm="extractive")
        except RagError as exc:
            return "busy" if str(exc).startswith("busy:") else f"RagError: {exc}"
        return "answered" if a.question == q else f"got the answer to {a.question!r} for {q!r}"

    return _drive("python-api", questions, requests, concurrency, ask_one)


def ui_load(rag: RAG, questions: list[str], requests: int, concurrency: int) -> LoadResult:
    """Concurrent sessions against the UI server's queue on 127.0.0.1, one client per worker."""
    from gradio_client import Client

    from ..frontends import frontend

    ui = frontend("ui")
    demo = ui.build_app(rag, warm=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = ui.launch(demo, rag.settings, "127.0.0.1", port, block=False)

    def ask_one(local: threading.local, q: str) -> str:
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False)  # its own session, like a browser tab
        try:
            chat = local.client.submit(q, "extractive", rag.settings.top_k, "", "", api_name="/respond").result(timeout=300)[0]
        except Exception as exc:
            return "busy" if "queue is full" in str(exc).lower() else f"{type(exc).__name__}: {exc}"
        html = "".join(part["text"] for m in chat for part in (m["content"] if isinstance(m["content"], list) else [{"text": m["content"]}]))
        if "rag-error" in html:
            return "busy" if "busy:" in html else "error shown: " + html[html.find("rag-error") :][:200]
        ok = ("rag-text" in html or "rag-abstain" in html) and q.replace("'", "&#x27;")[:40] in html
        return "answered" if ok else "no answer for its own question"

    try:
        return _drive("ui-server-queue", questions, requests, concurrency, ask_one)
    finally:
        with contextlib.redirect_stdout(sys.stderr):  # Gradio prints on close; stdout may be --json
            demo.close()


def serve_load(rag: RAG, questions: list[str], requests: int, concurrency: int) -> LoadResult:
    """Concurrent ``POST /v1/ask`` against ``rag serve`` on 127.0.0.1, one HTTP client per worker.

    A request must come back with the answer to its own question, or refused with 429 and
    ``Retry-After`` (its bounded line is full); anything else counts as failed.
    """
    import httpx
    import uvicorn

    from ..serve.app import create_app

    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(rag), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="rag-bench-serve", daemon=True)
    thread.start()
    clients: list[httpx.Client] = []

    def ask_one(local: threading.local, q: str) -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=300)
            clients.append(local.client)
        r = local.client.post("/v1/ask", json={"question": q, "backend": "extractive"})
        if r.status_code == 429:
            return "busy" if r.headers.get("retry-after", "").isdigit() else "429 without Retry-After"
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text[:200]}"
        return "answered" if r.json().get("question") == q else f"got the answer to {r.json().get('question')!r} for {q!r}"

    try:
        while not server.started:
            if not thread.is_alive():
                raise RagError("the rag serve for the load did not start")
            time.sleep(0.05)
        return _drive("rag-serve", questions, requests, concurrency, ask_one)
    finally:
        for c in clients:
            c.close()
        server.should_exit = True
        thread.join(60)
        sock.close()


def load_bench(rag: RAG, questions: list[str], requests: int = 200, concurrency: int = 16, ui: bool = True, serve: bool = True) -> dict:
    """Every path, with peak memory before and after: memory must stay bounded under load."""
    rag.warm(llm="extractive")  # the embedder only: no model is loaded for this test
    rag.ask(questions[0], llm="extractive")
    before = peak_rss_mb()
    out = {"backend": "extractive", "api": api_load(rag, questions, requests, concurrency).summary()}
    if ui:
        out["ui"] = ui_load(rag, questions, requests, concurrency).summary()
    if serve:
        out["serve"] = serve_load(rag, questions, requests, concurrency).summary()
    out["peak_rss_mb_before"] = round(before, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return out


def markdown(result: dict) -> str:
    rows = ["| path | requests | concurrency | answered | refused busy | failed | p50 | p95 | answered/s |", "|---|---|---|---|---|---|---|---|---|"]
    for key in ("api", "ui", "serve"):
        r = result.get(key)
        if r:
            rows.append(
                f"| {r['path']} | {r['requests']} | {r['concurrency']} | {r['answered']} | {r['refused_busy']} | {r['failed']} | "
                f"{r['p50_s']} s | {r['p95_s']} s | {r['throughput_rps']} |"
            )
    rows.append("")
    rows.append(f"Peak memory {result['peak_rss_mb']:.0f} MB (after warm-up: {result['peak_rss_mb_before']:.0f} MB); extractive backend, 127.0.0.1.")
    if result.get("serve"):
        rows.append("rag-serve: refused busy means 429 with Retry-After (one answer written at a time, RAG_SERVE_QUEUE more waiting).")
    return "\n".join(rows)


def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``load`` under ``rag bench``."""
    p = bench_subparsers.add_parser("load", help="concurrent questions through the Python API, the UI server's queue and rag serve (extractive)")
    p.add_argument("--index", dest="index_dir", default=None, help="index folder (default: $RAG_INDEX_DIR or index/)")
    p.add_argument("--questions", default=None, help="QA set whose questions are cycled (default: four built-in questions)")
    p.add_argument("--requests", type=int, default=200, help="requests per path (default 200)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--no-ui", action="store_true", help="leave out the UI server's queue")
    p.add_argument("--no-serve", action="store_true", help="leave out rag serve")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..api import RAG

    if not 1 <= args.requests <= 10_000 or not 1 <= args.concurrency <= 256:
        raise RagError("--requests must be 1..10000 and --concurrency 1..256")
    questions = [q.question for q in load_questions(args.questions)] if args.questions else FALLBACK_QUESTIONS
    settings = Settings.from_env(index_dir=args.index_dir)
    rag = RAG.open(settings.index_dir, settings)
    result = load_bench(rag, questions, args.requests, args.concurrency, ui=not args.no_ui, serve=not args.no_serve)
    print(json.dumps(result, indent=1) if args.json else markdown(result))
    failed = result["api"]["failed"] + (result.get("ui") or {}).get("failed", 0) + (result.get("serve") or {}).get("failed", 0)
    if failed:
        print(f"error: {failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0
