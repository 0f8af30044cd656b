"""Report helpers shared by the benchmarks: the ours-against-the-peer table."""

from __future__ import annotations


def comparison_table(rows: list[tuple[str, str, str]], ours: dict, peer: dict | None, peer_name: str) -> list[str]:
    """Markdown lines: one row per (label, key, format) with ours, the peer's value and ours/theirs."""

    def cell(f: str, v: float | None) -> str:
        return "n/a" if v is None else f.format(v)

    lines = [f"| metric | ours | {peer_name} | ratio ours/theirs |", "|---|---|---|---|"]
    for label, key, f in rows:
        o, t = ours[key], (peer[key] if peer else None)
        lines.append(f"| {label} | {cell(f, o)} | {cell(f, t)} | {f'{o / t:.2f}' if o is not None and t else 'n/a'} |")
    return lines
