"""The RealTime QA bench's report: the markdown tables, the charts and the files written."""

from __future__ import annotations

import json
from pathlib import Path

from .report import comparison_chart, comparison_table

PEER_NAME = "llama-index VectorStoreIndex + FaissVectorStore"
METRIC_KEYS = ("hits@1", "hits@5", "hits@10", "mrr@10")
STAT_KEYS = ("n_chunks", "build_s", "chunks_per_s", "query_p50_ms", "query_p95_ms", "peak_rss_mb")


def ratios(ours: dict, peer: dict) -> dict:
    out = {k: ours[k] / peer[k] for k in METRIC_KEYS if ours[k] is not None and peer[k]}
    out["build_speedup"] = peer["build_s"] / ours["build_s"]
    out["query_speedup"] = peer["query_p50_ms"] / ours["query_p50_ms"]
    out["memory"] = ours["peak_rss_mb"] / peer["peak_rss_mb"]
    return out


# ---------------------------------------------------------------- report
_ROWS = [
    ("Hits@1", "hits@1", "{:.3f}"),
    ("Hits@5", "hits@5", "{:.3f}"),
    ("Hits@10", "hits@10", "{:.3f}"),
    ("MRR@10", "mrr@10", "{:.3f}"),
    ("chunks indexed", "n_chunks", "{:,.0f}"),
    ("index build (s)", "build_s", "{:.0f}"),
    ("build throughput (chunks/s)", "chunks_per_s", "{:.1f}"),
    ("query latency p50 (ms)", "query_p50_ms", "{:.1f}"),
    ("query latency p95 (ms)", "query_p95_ms", "{:.1f}"),
    ("peak memory (MB)", "peak_rss_mb", "{:.0f}"),
]


def markdown(result: dict) -> str:
    """Metric × ours, peer, ratio; the questions left out; with --answer, accuracy against the baselines; with --open, open answers."""
    peer = result["peer"]
    s = result["settings"]
    lines: list[str] = []
    if result["n_questions"]:
        lines = comparison_table(_ROWS, result, peer, PEER_NAME)
        a, pa = result["all_gold_questions"], (peer["all_gold_questions"] if peer else None)
        lines.append(
            f"| Hits@5 / Hits@10 / MRR@10 over all {a['n_questions']} gold questions | {a['hits@5']:.3f} / {a['hits@10']:.3f} / {a['mrr@10']:.3f} | "
            + (f"{pa['hits@5']:.3f} / {pa['hits@10']:.3f} / {pa['mrr@10']:.3f}" if pa else "n/a")
            + " | |"
        )
        lines.append("")
    lines += [
        f"RealTime QA weeks {result['weeks'][0]}–{result['weeks'][-1]}: {result['n_pages']:,} pages (gold articles and search results, "
        f"one per url{', written as one pages.jsonl' if result.get('corpus_format') == 'jsonl' else ''}), "
        f"{result['n_questions']} questions with a real gold article"
        + ("; a hit is a retrieved passage of a gold page, ranked by article." if result["n_questions"] else " (retrieval is not scored)."),
        f"Ours: cleaned pages, {s['chunk_chars']}-character sentence chunks with title and date, all-MiniLM-L6-v2 ({result['precision']}) "
        f"vectors for the first {s['dense_chunks_per_article'] or 'all'} passages of each article ({result['n_dense']:,} of {result['n_chunks']:,}), "
        f"BM25 over every passage, rank fusion, duplicate pages folded, articles ranked by their best passages (each further one adds "
        f"{s['article_support']}×), and the quiz date as `as_of` (an article from that day gains {s['recency_weight']} rank-1 fusion "
        f"scores, halving every {s['recency_half_life_days']:g} days).",
    ]
    if peer:
        lines.append(
            f"Peer: {PEER_NAME} over the raw pages (title and date as metadata), SentenceSplitter 256 tokens, the same embedder in fp32, "
            "similarity_top_k=10. Each side built its index from scratch in its own process (build time includes cleaning, chunking, "
            "embedding and writing; peak memory is that process's)."
        )
    notes = []
    if result.get("reused_index"):
        notes.append("Our index was kept from the last run (--reuse-index): its build time and throughput are not a cold build.")
    if result["excluded"]:
        notes.append(f"Left out ({result['n_excluded']}): " + "; ".join(f"{e['id']} ({e['why']})" for e in result["excluded"]) + ".")
    if result.get("answer"):
        mc = result["answer"]
        notes += [
            "",
            f"| multiple choice ({mc['n_questions']} questions) | accuracy |",
            "|---|---|",
            f"| ours: {mc['model']} reading our top {result['settings']['top_k']} passages | {mc['accuracy']:.3f} |",
        ]
        for name, b in sorted(mc["baselines"].items(), key=lambda x: -x[1]["accuracy"]):
            notes.append(f"| published: {name} (n={b['n']}) | {b['accuracy']:.3f} |")
    if result.get("open"):
        notes += ["", *open_markdown(result["open"])]
    return "\n".join(lines + notes) + "\n"


def open_markdown(o: dict) -> list[str]:
    """The open-answer table: right / abstained / wrong per group, then latency and the confidence trade-off."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    lines = [
        f"Open answers ({o['n_questions']} questions asked through `RAG.ask` without their choices, the quiz date as `as_of`):",
        "",
        "| questions | n | right | abstained | wrong | right − wrong |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (
        ("all", "all"),
        ("answerable from the pages", "answerable"),
        ("not answerable from the pages", "not_answerable"),
        ("right choice anywhere in the corpus", "in_corpus"),
        ("right choice nowhere in the corpus", "not_in_corpus"),
    ):
        g = o[key]
        lines.append(f"| {label} | {g['n']} | {pct(g['right'])} | {pct(g['abstained'])} | {pct(g['wrong'])} | {pct(g['right_minus_wrong'])} |")
    first, total, p95 = o["first_token_p50_s"], o["total_p50_s"], o["total_p95_s"]
    lines += [
        "",
        "Right: the answer names the right choice better than any other (token recall ≥ 0.5 and above every other choice's). "
        "Answerable from the pages: the right choice occurs in one of the question's own pages (its gold article or search results); "
        "the last two rows use the looser test of the right choice occurring in any indexed page.",
        f"Right answers whose citations quote the right choice: {pct(o['right_quoting_answer'])}. "
        f"Answerable questions whose retrieved passages hold the right choice: {pct(o['answer_in_front'])}; "
        f"whose sentences given to the model hold it: {pct(o['answer_in_context'])}.",
        f"Latency: first token p50 {'n/a' if first is None else f'{first:.2f} s'}, answer p50 "
        f"{'n/a' if total is None else f'{total:.2f} s'}, p95 {'n/a' if p95 is None else f'{p95:.2f} s'}; peak memory {o['peak_rss_mb']:.0f} MB.",
    ]
    if o.get("withheld"):
        lines += ["", "Why answers were withheld (the check, and whether the model's withheld draft named the right choice):", ""]
        lines += ["| check | right draft | wrong draft | no draft |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['right_draft']} | {v['wrong_draft']} | {v['no_draft']} |" for k, v in o["withheld"].items()]
    if o.get("tradeoff"):
        lines += [
            "",
            "An answer that passed every check stands when the fitted chance that it is right (rag.answer.decision) reaches the "
            f"threshold (configured: {o['min_answer_score']:.2f}; ◀ marks the row nearest it); moving it trades right answers against wrong ones:",
            "",
            "| threshold | right | abstained | wrong | right − wrong | answerable: right / abstained | not answerable: abstained |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in o["tradeoff"]:
            nearest = min(o["tradeoff"], key=lambda t: abs(t["threshold"] - o["min_answer_score"]))["threshold"]
            mark = " ◀" if c["threshold"] == nearest else ""
            lines.append(
                f"| {c['threshold']:.2f}{mark} | {pct(c['right'])} | {pct(c['abstained'])} | {pct(c['wrong'])} | {pct(c['right'] - c['wrong'])} | "
                f"{pct(c['answerable_right'])} / {pct(c['answerable_abstained'])} | {pct(c['not_answerable_abstained'])} |"
            )
    return lines


def write_outputs(result: dict, md: str, out: str | Path) -> list[Path]:
    """realtimeqa.md and .json; realtimeqa.png (hit rates, build/query cost) and, with --open, realtimeqa-open.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md_path, js_path = out / "realtimeqa.md", out / "realtimeqa.json"
    md_path.write_text("# RealTime QA: ours against llama-index's default path\n\n" + md, encoding="utf-8")
    js_path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    files = [md_path, js_path]
    if result["n_questions"]:
        panels = [
            ("retrieval (higher is better)", list(METRIC_KEYS)),
            ("index build (s)", ["build_s"]),
            ("query p50 (ms)", ["query_p50_ms"]),
            ("peak memory (MB)", ["peak_rss_mb"]),
        ]
        title = f"RealTime QA, {result['n_questions']} questions, {result['n_pages']:,} pages"
        png_path = comparison_chart(out / "realtimeqa.png", result, result["peer"], PEER_NAME, panels, title, first_panel_ylim=(0, 1.25))
        files.append(png_path)
    if result.get("open"):
        files.append(open_chart(result["open"], out / "realtimeqa-open.png", f"{result['weeks'][0]}–{result['weeks'][-1]}"))
    return files


def open_chart(o: dict, path: Path, label: str) -> Path:
    """Stacked right / abstained / wrong bars per question group, and the confidence trade-off when answers carry one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("all", "all"), ("answerable", "answerable"), ("not answerable", "not_answerable")]
    curve = o.get("tradeoff") or []
    fig, axes = plt.subplots(1, 2 if curve else 1, figsize=(11 if curve else 7, 3.4), squeeze=False)
    ax = axes[0][0]
    left = [0.0] * len(groups)
    for verdict, colour in (("right", "#2e9d4f"), ("abstained", "#b8b8b8"), ("wrong", "#d1453b")):
        vals = [o[k][verdict] or 0.0 for _, k in groups]
        ax.barh([g for g, _ in groups], vals, left=left, color=colour, label=verdict)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.set_title("share of questions", fontsize=9)
    if curve:
        ax2 = axes[0][1]
        ax2.plot([c["abstained"] for c in curve], [c["right"] for c in curve], color="#2e9d4f", label="right")
        ax2.plot([c["abstained"] for c in curve], [c["wrong"] for c in curve], color="#d1453b", label="wrong")
        ax2.set_xlabel("abstained", fontsize=8)
        ax2.set_title("raising the confidence threshold", fontsize=9)
        ax2.legend(fontsize=7)
    fig.suptitle(f"RealTime QA {label}: open answers, {o['n_questions']} questions")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
