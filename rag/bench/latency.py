"""``rag bench latency``: our pipeline against llama-index's CitationQueryEngine, warm, in one run;
with ``--one-shot``, also a fresh ``rag ask`` process per question, as from a terminal or a script.

Both pipelines answer the same questions with the same model file, embedder, top-k, answer-token
cap and temperature. Each loads its model once and answers one untimed warm-up question before
the timed ones, so the figures are steady-state answer times; model load is reported apart.

The peer runs in a separate spawned process: both hold a copy of the model, and a fresh process
gives each pipeline its own peak-memory figure (the peak of the process that ran it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..answer.evidence import Evidence
from ..answer.llm import resolve_model
from ..eval import load_questions
from ..measure import peak_rss_mb, percentile
from ..settings import Settings
from ..types import Answer, Message, RagError
from .report import comparison_chart, comparison_table

if TYPE_CHECKING:
    from llama_cpp import Llama

    from ..api import RAG

# the development QA set, where the project keeps it beside its checkout (run from the project folder)
DEFAULT_QUESTIONS = Path("../shared/eval/seed_qa_dev.jsonl")
PEER_NAME = "llama-index CitationQueryEngine"
STAT_KEYS = ("ttft_p50_s", "ttft_p95_s", "total_p50_s", "total_p95_s", "peak_rss_mb")


# ---------------------------------------------------------------- CLI
def add_parser(bench_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench latency`` to the ``rag bench`` subcommands."""
    lat = bench_subparsers.add_parser(
        "latency",
        help=f"time to first token, answer time, tokens and memory: ours against {PEER_NAME}",
        description=f"Answer the questions warm with our pipeline and with {PEER_NAME} (same model, embedder and top-k) and compare.",
    )
    lat.add_argument("--questions", type=Path, default=None, help=f"QA set, one JSON object a line (default: {DEFAULT_QUESTIONS})")
    lat.add_argument("--index", dest="index_dir", default=None, help="index folder (default: $RAG_INDEX_DIR or index/)")
    lat.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    lat.add_argument("--out", type=Path, default=None, help="also write bench-latency.md, bench-latency.json and bench-latency.png here")
    lat.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N questions")
    lat.add_argument("--model", dest="local_model", default=None, help="local model: qwen (default), smollm, or a .gguf path")
    lat.add_argument("--top-k", type=int, default=None, help="passages to retrieve, for both pipelines (default: 5)")
    lat.add_argument("--no-peer", action="store_true", help=f"time only our pipeline, not {PEER_NAME}")
    lat.add_argument(
        "--one-shot",
        action="store_true",
        help="also time one fresh `rag ask` process per question (default model and extractive), answering in its own process "
        "and through a `rag serve` started for the index",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``rag bench latency`` from parsed arguments; raises RagError on bad input."""
    from ..api import RAG

    path = args.questions or DEFAULT_QUESTIONS
    if not Path(path).is_file():
        raise RagError(f"questions file not found: {path} (pass --questions FILE)")
    if args.limit is not None and args.limit < 1:
        raise RagError(f"--limit must be at least 1, not {args.limit}")
    questions = [q.question for q in load_questions(path)][: args.limit]
    settings = Settings.from_env(index_dir=args.index_dir, top_k=args.top_k, local_model=args.local_model)
    # first, while this process holds no model: each `rag ask` process has the machine to itself
    shots = one_shot(settings, questions, progress=sys.stderr.isatty()) if args.one_shot else None
    rag = RAG.open(settings.index_dir, settings)
    result = latency_bench(rag, questions, peer=not args.no_peer, progress=sys.stderr.isatty())
    result["one_shot"] = shots
    md = markdown(result)
    if args.out:
        files = write_outputs(result, md, args.out)
        print("wrote " + ", ".join(map(str, files)), file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        print(md, end="")
    return 0


# ---------------------------------------------------------------- the benchmark
def latency_bench(rag: RAG, questions: list[str], peer: bool = True, *, progress: bool = False, **overrides: object) -> dict:
    """Time our pipeline (in this process) and, when ``peer``, CitationQueryEngine (in a fresh process).

    Overrides are Settings fields (``local_model="smollm"``, ``top_k=3``); the backend is always the
    local llama.cpp model, since that is the one both pipelines can run from the same file.
    Returns our figures at the top level, the peer's under ``"peer"``, and ``"speedup"``: the
    peer's median answer time over ours.
    """
    if not questions:
        raise RagError("no questions to benchmark")
    overrides = {**overrides, "llm": "local"}
    settings = rag.settings.with_(**overrides)
    load_s = rag.warm(**overrides)
    llama = rag.llm(settings).model()
    warmup = _warm_up_ours(rag, questions, overrides)

    rows = []
    for q in _progress(questions, "ours", progress):
        rows.append(_time_ours(rag, llama, settings, q, overrides))
    ours = summarise(rows, load_s, peak_rss_mb())

    theirs = None
    if peer:
        # spawn, not fork: a forked child would start with this process's memory, model included
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            theirs = pool.submit(_peer_run, _passages(rag.index), settings, llama.n_threads, questions, warmup, progress).result()
    # our quick abstentions pull our median down; this one compares the same questions, all answered by a model
    asked = [r["called_model"] for r in rows]
    for side in filter(None, (ours, theirs)):
        xs = [r["total_s"] for r, a in zip(side["rows"], asked) if a]
        side["total_p50_model_s"] = statistics.median(xs) if xs else None
    return {
        "model": resolve_model(settings).name,
        "top_k": settings.top_k,
        "max_answer_tokens": settings.max_answer_tokens,
        "temperature": settings.temperature,
        "n_questions": len(questions),
        "warmup_question": warmup,
        **ours,
        "peer": theirs,
        "speedup": theirs["total_p50_s"] / ours["total_p50_s"] if theirs else None,
    }


ONE_SHOT_BACKENDS = ("local", "extractive")
SERVED = " via rag serve"  # the suffix of a backend's one-shot figures answered through a running server


def one_shot(
    settings: Settings, questions: list[str], backends: Sequence[str] = ONE_SHOT_BACKENDS, *, served: bool = True, progress: bool = False
) -> dict:
    """Time ``rag ask --json`` in a fresh process per question, for each backend: what a terminal user waits.

    Wall time runs from starting the process to its exit: Python's start, imports, opening the
    index, loading the embedder and the model, the answer and printing it. The first token's wall
    time is the wall time less what the process reports it spent after its first token. One
    untimed process per backend first: the disk cache holds the files and the model's evaluated
    instruction prefix is saved, as on any machine after its first question.

    With ``served``, the same again with a ``rag serve`` started for the index (the ``"<backend> via
    rag serve"`` entries): each ``rag ask`` sends its question there, and ``identical`` counts the
    answers equal to the in-process ones (all but timings).
    """
    out = {}
    for backend in backends:
        out[backend] = _one_shot_backend(settings, backend, questions, False, progress)
    if served:
        with _rag_serve(settings):
            for backend in backends:
                r = out[backend + SERVED] = _one_shot_backend(settings, backend, questions, True, progress)
                r["identical"] = sum(a["answer_sha"] == b["answer_sha"] for a, b in zip(r["rows"], out[backend]["rows"]))
    return out


def _one_shot_backend(settings: Settings, backend: str, questions: list[str], served: bool, progress: bool) -> dict:
    # the model named for every backend: the server's settings and the asker's must agree for it to take the question
    cmd = [sys.executable, "-m", "rag.cli", "ask", "--json", "--llm", backend, "--index", str(settings.index_dir)]
    cmd += ["--model", settings.local_model, "--top-k", str(settings.top_k)]
    _ask_process(cmd, questions[-1], served)
    rows = [_ask_process(cmd, q, served) for q in _progress(questions, f"one-shot {backend}{SERVED * served}", progress)]
    firsts = [r["ttft_s"] for r in rows if r["ttft_s"] is not None]
    walls = [r["total_s"] for r in rows]
    return {
        "ttft_p50_s": statistics.median(firsts) if firsts else None,
        "ttft_p95_s": percentile(firsts, 0.95) if firsts else None,
        "total_p50_s": statistics.median(walls),
        "total_p95_s": percentile(walls, 0.95),
        # the answer itself, as the answering process timed it (through a server: the warm server's), and the wall
        # time over it per question: measured in the same moment, so a machine busy with other work moves both alike
        "answer_p50_s": statistics.median(r["answer_s"] for r in rows),
        "over_answer_p50": statistics.median(r["total_s"] / r["answer_s"] for r in rows if r["answer_s"]) if any(r["answer_s"] for r in rows) else None,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
        "rows": rows,
    }


@contextmanager
def _rag_serve(settings: Settings):
    """A ``rag serve`` process for the index, on a port the system picks, until the block ends."""
    import signal
    import subprocess
    import tempfile

    from .. import forward

    cmd = [sys.executable, "-m", "rag.cli", "serve", "--index", str(settings.index_dir), "--model", settings.local_model, "--port", "0"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        try:
            while not any(info["pid"] == proc.pid for _, info in forward.servers(settings)):
                if proc.poll() is not None:
                    err.seek(0)
                    last = (err.read().decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
                    raise RagError(f"`rag serve` for the one-shot figures exited with {proc.returncode}: {last}")
                time.sleep(0.2)
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ask_process(cmd: list[str], question: str, served: bool = False) -> dict:
    """One ``rag ask`` process: its wall time, first-token wall time and peak memory (from wait4).

    ``served``: it must be answered by the running ``rag serve`` (else in its own process, whatever runs).
    """
    import hashlib
    import os
    import subprocess
    import tempfile

    env = {**os.environ, "RAG_ASK_FORWARD": "auto" if served else "off"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*cmd, question], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        said = err.read().decode("utf-8", "replace")
        if proc.returncode:
            last = (said.strip().splitlines() or ["no output"])[-1]
            raise RagError(f"one-shot `rag ask` exited with {proc.returncode}: {last}")
        if served and "answered by the rag serve" not in said:
            raise RagError(f"one-shot `rag ask` answered in its own process with a rag serve running: {question!r}")
        answer = json.loads(out.read())
    timings = answer.pop("timings")
    first = timings.get("first_token_s")
    return {
        "question": question,
        "total_s": wall,
        "ttft_s": None if first is None else wall - (timings["total_s"] - first),
        "answer_s": timings["total_s"],
        # wait4's peak (kilobytes on Linux) also counts the image the child replaced at exec
        # (see measure.peak_rss_mb), here this process before it loads any model: far below a rag ask's
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "answer_sha": hashlib.sha256(json.dumps(answer, sort_keys=True).encode()).hexdigest()[:16],
    }


def _progress(items: list[str], desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="q", disable=not enabled, file=sys.stderr)


def _warm_up_ours(rag, questions: list[str], overrides: dict) -> str:
    """Answer one question untimed and return it, for the peer to warm up on too.

    The last question that reaches the model, so llama.cpp's prompt-prefix cache is warm as in
    steady use; the first timed question then follows a different prompt, not its own.
    """
    for q in reversed(questions):
        if rag.ask(q, **overrides).timings.generation_s is not None:
            return q
    return questions[-1]  # every question abstains before the model: nothing of ours to warm


def _time_ours(rag, llama, settings: Settings, question: str, overrides: dict) -> dict:
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    result = None
    for item in rag.stream(question, **overrides):
        if isinstance(item, Answer):
            result = item
        elif item:
            if first is None:
                first = time.perf_counter() - t0
            pieces.append(item)
    total = time.perf_counter() - t0
    assert result is not None
    called = result.timings.generation_s is not None
    return {
        "question": question,
        "ttft_s": first,
        "total_s": total,
        "called_model": called,
        "abstained": result.abstained,
        "ranking_s": result.timings.ranking_s,  # the candidates scored (RAG_RANK_CANDIDATES), part of total_s
        "prompt_tokens": _our_prompt_tokens(llama, settings, result) if called else None,
        "generated_tokens": count_tokens(llama, "".join(pieces)) if called else None,
        "answer": result.text,
    }


def _our_prompt_tokens(llama, settings: Settings, result: Answer) -> int:
    """Tokens of the prompt RAG.stream sent for ``result``, rebuilt the way rag/api.py builds it.

    Rebuilt (untimed) with the same ``answer_prompt`` call on the answer's own passages, which
    gives the same messages since every step is deterministic.
    """
    messages = Evidence.build(result.question, result.passages).messages(settings.max_context_sentences)
    prompt = chat_prompt(llama, messages)
    # as llama-cpp-python's chat handler tokenizes a rendered template: specials parsed, no extra BOS
    return count_tokens(llama, prompt, add_bos=False, special=True)


# ---------------------------------------------------------------- the peer (runs in its own process)
def _passages(idx) -> list[dict]:
    """Our index's chunks with their articles' metadata, for the peer to index as its nodes.

    The same passages rather than llama-index's own 1024-token split: with that split top-k 5
    retrieves all four seed articles, and top-k would not mean the same amount of text for both.
    """
    out = []
    for c in idx.chunks:
        d = idx.docs[c.doc_id]
        meta = {k: v for k, v in (("file_name", d.id), ("title", d.title), ("date", d.date)) if v}
        out.append({"id": c.id, "text": c.text, "metadata": meta})
    return out


def _peer_run(passages: list[dict], settings: Settings, threads: int, questions: list[str], warmup: str, progress: bool) -> dict:
    from llama_index.core import Settings as LISettings
    from llama_index.core import VectorStoreIndex
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.llm import LLMCompletionStartEvent
    from llama_index.core.query_engine import CitationQueryEngine
    from llama_index.core.schema import TextNode
    from llama_index.llms.llama_cpp import LlamaCPP

    from ..index.embedding import as_llama_embedding

    class PromptRecorder(BaseEventHandler):
        """Keeps each prompt the LLM is actually sent (a compact/refine synthesis may send several)."""

        prompts: list[str] = []

        @classmethod
        def class_name(cls) -> str:
            return "PromptRecorder"

        def handle(self, event, **kwargs) -> None:
            if isinstance(event, LLMCompletionStartEvent):
                self.prompts.append(event.prompt)

    fmt = _ChatFormat()
    t = time.perf_counter()
    llm = LlamaCPP(
        model_path=str(resolve_model(settings)),  # a path, always: without one LlamaCPP downloads a model
        temperature=settings.temperature,
        # our answer-token cap, not LlamaCPP's 256: the same cap keeps total times comparable
        max_new_tokens=settings.max_answer_tokens,
        context_window=settings.llm_ctx,
        model_kwargs={"n_threads": threads, "n_ctx": settings.llm_ctx},
        # LlamaCPP's default prompt format is Llama 2's [INST]; format with the model's own template
        messages_to_prompt=fmt.messages,
        completion_to_prompt=fmt.completion,
        verbose=False,
    )
    load_s = time.perf_counter() - t
    fmt.llama = llm._model
    # set both explicitly: llama-index's defaults reach for OpenAI, which fails offline
    LISettings.llm = llm
    LISettings.embed_model = as_llama_embedding()

    t = time.perf_counter()
    index = VectorStoreIndex([TextNode(id_=p["id"], text=p["text"], metadata=p["metadata"]) for p in passages])
    index_s = time.perf_counter() - t
    engine = CitationQueryEngine.from_args(index, llm=llm, similarity_top_k=settings.top_k, streaming=True)
    sent = PromptRecorder()
    get_dispatcher().add_event_handler(sent)

    _time_peer(engine, llm._model, sent, warmup)
    rows = [_time_peer(engine, llm._model, sent, q) for q in _progress(questions, "llama-index", progress)]
    out = summarise(rows, load_s, peak_rss_mb())
    out["index_build_s"] = index_s
    return out


def _time_peer(engine, llama, sent, question: str) -> dict:
    sent.prompts.clear()
    t0 = time.perf_counter()
    first = None
    pieces: list[str] = []
    response = engine.query(question)
    for tok in response.response_gen:
        if tok:
            if first is None:
                first = time.perf_counter() - t0
            pieces.append(tok)
    total = time.perf_counter() - t0
    text = "".join(pieces)
    return {
        "question": question,
        "ttft_s": first,
        "total_s": total,
        "called_model": bool(sent.prompts),
        "abstained": False,  # CitationQueryEngine always answers
        # completion-style: llama-cpp-python tokenizes the prompt with specials and the model's BOS
        "prompt_tokens": sum(count_tokens(llama, p, add_bos=True, special=True) for p in sent.prompts),
        "generated_tokens": count_tokens(llama, text),
        "answer": text,
    }


class _ChatFormat:
    """llama-index prompt formatting through the model's chat template, as our chat completions get."""

    def __init__(self) -> None:
        self.llama = None

    def messages(self, msgs: Sequence) -> str:
        return chat_prompt(self.llama, [{"role": m.role.value, "content": m.content or ""} for m in msgs])

    def completion(self, text: str) -> str:
        return chat_prompt(self.llama, [{"role": "user", "content": text}])


# ---------------------------------------------------------------- tokens, memory, statistics
def chat_prompt(llama: Llama, messages: list[Message]) -> str:
    """The text llama-cpp-python's chat completion renders for ``messages`` (GGUF template, else ChatML)."""
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"
    eos, bos = llama.token_eos(), llama.token_bos()
    text = llama._model.token_get_text
    return _formatter(template, text(eos) if eos != -1 else "", text(bos) if bos != -1 else "")(messages=messages).prompt


@lru_cache(maxsize=4)
def _formatter(template: str, eos: str, bos: str):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)


def count_tokens(llama: Llama, text: str, add_bos: bool = False, special: bool = False) -> int:
    """Tokens of ``text`` in the model's vocabulary (generated text is re-tokenized, the same way for both)."""
    return len(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)) if text else 0


def summarise(rows: list[dict], load_s: float, peak_mb: float) -> dict:
    """Median and p95 of each measure; TTFT and tokens only over questions that reached the model."""

    def stats(key: str) -> tuple[float | None, float | None]:
        xs = [r[key] for r in rows if r[key] is not None and (r["called_model"] or key == "total_s")]
        return (statistics.median(xs), percentile(xs, 0.95)) if xs else (None, None)

    out: dict = {}
    for key, name in (
        ("ttft_s", "ttft"),
        ("total_s", "total"),
        ("prompt_tokens", "prompt_tokens"),
        ("generated_tokens", "generated_tokens"),
    ):
        p50, p95 = stats(key)
        suffix = "_s" if key.endswith("_s") else ""
        out[f"{name}_p50{suffix}"], out[f"{name}_p95{suffix}"] = p50, p95
    out["peak_rss_mb"] = peak_mb
    out["load_s"] = load_s
    out["n_first_token"] = sum(r["ttft_s"] is not None for r in rows)
    out["n_no_model_call"] = sum(not r["called_model"] for r in rows)
    out["rows"] = rows
    return out


# ---------------------------------------------------------------- report
_ROWS = [
    ("time to first token, median (s)", "ttft_p50_s", "{:.2f}"),
    ("time to first token, p95 (s)", "ttft_p95_s", "{:.2f}"),
    ("total answer time, median (s)", "total_p50_s", "{:.2f}"),
    ("total answer time, p95 (s)", "total_p95_s", "{:.2f}"),
    ("total answer time, median over the questions ours sent to the model (s)", "total_p50_model_s", "{:.2f}"),
    ("prompt tokens, median", "prompt_tokens_p50", "{:.0f}"),
    ("prompt tokens, p95", "prompt_tokens_p95", "{:.0f}"),
    ("generated tokens, median", "generated_tokens_p50", "{:.0f}"),
    ("generated tokens, p95", "generated_tokens_p95", "{:.0f}"),
    ("peak memory (MB)", "peak_rss_mb", "{:.0f}"),
    ("model load (s), not in answer times", "load_s", "{:.2f}"),
]


def markdown(result: dict) -> str:
    """The comparison as a markdown table (metric × ours, peer, ratio ours/theirs) with notes."""
    peer = result["peer"]
    n = result["n_questions"]
    lines = comparison_table(_ROWS, result, peer, PEER_NAME)
    peer_n = f"{peer['n_first_token']}/{n}" if peer else "n/a"
    lines.append(f"| questions with a first token | {result['n_first_token']}/{n} | {peer_n} | |")
    notes = [
        "",
        f"Model `{result['model']}`, top-k {result['top_k']}, at most {result['max_answer_tokens']} answer tokens, "
        f"temperature {result['temperature']}, {n} questions. Both retrieve from the same passages (the index's chunks) with the "
        f"same embedder (all-MiniLM-L6-v2); {PEER_NAME} runs with its default prompts and dense retrieval, ours with hybrid "
        "retrieval, sentence selection and citation verification.",
        f"Warm: each pipeline loaded its model once and answered one untimed warm-up question (“{result['warmup_question']}”) "
        "before the timed ones; model load is reported apart and not counted in answer times.",
        "Time to first token and total answer time run from the question to the first streamed token and to the final answer "
        "(ours: with verified citations). Prompt tokens: the rendered prompt in the model's tokenizer; generated tokens: the "
        "streamed text re-tokenized.",
    ]
    if result["n_no_model_call"]:
        notes.append(
            f"{result['n_no_model_call']} of our questions abstained before calling the model (out of corpus): "
            "counted in total answer time, left out of first-token and token figures."
        )
    notes.append(
        "Peak memory: peak resident set (VmHWM) of the process that ran each pipeline; ours ran in the benchmark's process, "
        f"{PEER_NAME} in a fresh spawned process, so neither includes the other's model."
    )
    if peer:
        notes.append(f"Speedup (their median answer time over ours): {result['speedup']:.2f}×.")
    return "\n".join(lines + notes + _one_shot_lines(result.get("one_shot"), n, result.get("total_p50_s"))) + "\n"


def _one_shot_lines(shots: dict | None, n: int, warm_s: float | None = None) -> list[str]:
    if not shots:
        return []

    def cell(v: float | None, f: str = "{:.2f}") -> str:
        return "n/a" if v is None else f.format(v)

    lines = [
        "",
        "One-shot: a fresh `rag ask` process per question, wall clock from its start to its exit (start, imports, index, "
        f"embedder and model loads included; one untimed process first), {n} questions; “via rag serve”: the same with a "
        "`rag serve` for the index running, which `rag ask` sends the question to. Against warm: the total's median over the "
        "warm one above (the local model's, answered in this process):",
        "",
        "| backend | first token p50 (s) | first token p95 (s) | total p50 (s) | total p95 (s) | against warm | answering p50 (s) "
        "| total over answering, p50 | peak memory (MB) | answers as in-process |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if warm_s:
        lines.append(f"| local, warm (in this process) | | | {warm_s:.2f} | | 1.00× | | | | |")
    for backend, r in shots.items():
        ratio = f"{r['total_p50_s'] / warm_s:.2f}×" if warm_s and backend.startswith("local") else "n/a"
        same = f"{r['identical']}/{len(r['rows'])}" if "identical" in r else ""
        over = f"{r['over_answer_p50']:.2f}×" if r.get("over_answer_p50") else "n/a"
        lines.append(
            f"| {backend} | {cell(r['ttft_p50_s'])} | {cell(r['ttft_p95_s'])} | {cell(r['total_p50_s'])} | "
            f"{cell(r['total_p95_s'])} | {ratio} | {cell(r.get('answer_p50_s'))} | {over} | {cell(r['peak_rss_mb'], '{:.0f}')} | {same} |"
        )
    lines += [
        "",
        "Answering: the answer's own total as the answering process timed it, from the question to the verified answer; "
        "through a server, the warm server's. Total over answering: each question's wall time over it, so the share a one-shot "
        "adds to a warm answer, measured in the same moment (a machine busy with other work moves both alike). Peak memory of "
        "a `rag ask` through a server is its own; the server holds the model.",
    ]
    return lines


def write_outputs(result: dict, md: str, out: str | Path) -> list[Path]:
    """Write bench-latency.md, bench-latency.json and a bar chart bench-latency.png under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md_path, js_path, png_path = out / "bench-latency.md", out / "bench-latency.json", out / "bench-latency.png"
    md_path.write_text(f"# Latency: ours against {PEER_NAME}\n\n" + md, encoding="utf-8")
    js_path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    panels = [
        ("seconds", ["ttft_p50_s", "ttft_p95_s", "total_p50_s", "total_p95_s"]),
        ("tokens", ["prompt_tokens_p50", "generated_tokens_p50"]),
        ("peak memory (MB)", ["peak_rss_mb"]),
    ]
    title = f"{result['model']}, top-k {result['top_k']}, {result['n_questions']} questions, warm"
    comparison_chart(png_path, result, result["peer"], PEER_NAME, panels, title, lambda k: k.replace("_s", "").replace("_", " "))
    return [md_path, js_path, png_path]
