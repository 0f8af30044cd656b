"""Report helpers shared by the benchmarks: the ours-against-the-peer table and chart."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

OURS_COLOUR, PEER_COLOUR = "#3b7dd8", "#e08a2c"


def comparison_table(rows: list[tuple[str, str, str]], ours: dict, peer: dict | None, peer_name: str) -> list[str]:
    """Markdown lines: one row per (label, key, format) with ours, the peer's value and ours/theirs."""

    def cell(f: str, v: float | None) -> str:
        return "n/a" if v is None else f.format(v)

    lines = [f"| metric | ours | {peer_name} | ratio ours/theirs |", "|---|---|---|---|"]
    for label, key, f in rows:
        o, t = ours[key], (peer[key] if peer else None)
        lines.append(f"| {label} | {cell(f, o)} | {cell(f, t)} | {f'{o / t:.2f}' if o is not None and t else 'n/a'} |")
    return lines


def comparison_chart(
    path: Path,
    ours: dict,
    peer: dict | None,
    peer_name: str,
    panels: list[tuple[str, list[str]]],
    title: str,
    tick_label: Callable[[str], str] = str,  # a key's label under its bars
    first_panel_ylim: tuple[float, float] | None = None,
) -> Path:
    """Grouped bars of ours (and the peer's) values, one panel per (title, keys); written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [("ours", ours, OURS_COLOUR)] + ([(peer_name, peer, PEER_COLOUR)] if peer else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.6), gridspec_kw={"width_ratios": [len(k) or 1 for _, k in panels]})
    width = 0.8 / len(runs)
    for ax, (panel, keys) in zip(axes, panels):
        for i, (name, r, colour) in enumerate(runs):
            ax.bar([k + i * width for k in range(len(keys))], [r[k] or 0 for k in keys], width, label=name, color=colour)
        labels = [tick_label(k) for k in keys] if len(keys) > 1 else [""]  # a lone bar is named by its panel
        ax.set_xticks([k + width * (len(runs) - 1) / 2 for k in range(len(keys))], labels, fontsize=8)
        ax.set_title(panel, fontsize=9)
    if first_panel_ylim:
        axes[0].set_ylim(*first_panel_ylim)
    axes[0].legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
