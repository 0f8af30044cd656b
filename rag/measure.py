"""Measurement helpers shared by evaluation and the benchmarks: percentiles and peak memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def percentile(xs: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``xs``, as the nearest observed value (a p95 of 12 timings is one of them)."""
    return float(np.percentile(np.asarray(xs, dtype=float), q * 100, method="nearest"))


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    VmHWM rather than ru_maxrss: after exec, Linux's ru_maxrss keeps the peak of the image the
    process replaced, so a spawned child would report its parent's memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
