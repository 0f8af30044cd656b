"""Shared fixtures: a real index of the seed articles, built once per test session."""

from __future__ import annotations

import gc
import json
import os
import shutil
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SHARED = ROOT.parent / "shared"  # the dev QA sets and benchmark data beside the project (CI has them)
DEV_QA = SHARED / "eval" / "seed_qa_dev.jsonl"
Q2012 = "Why did ties between Iran and Hamas break down in 2012?"
NEEDS_SHARED = "needs the shared data at"


def need_shared(path: Path) -> Path:
    """``path`` under ../shared; without it the test is skipped, and the run's summary names what did not run."""
    if not path.exists():
        pytest.skip(f"{NEEDS_SHARED} {path}")
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    """Say in one section which tests did not run for want of the shared data, so a green run without it is not mistaken for a full one."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if NEEDS_SHARED in str(r.longrepr)]
    if skipped:
        terminalreporter.section("shared data missing", sep="!", yellow=True, bold=True)
        terminalreporter.line(f"{len(skipped)} tests did not run: {SHARED} is missing here (CI has it); they check the dev QA sets and RealTime QA")


@pytest.fixture(scope="session")
def seed_dir(tmp_path_factory) -> Path:
    """A private copy of the seed articles (tests may add files to it)."""
    d = tmp_path_factory.mktemp("seeds")
    for f in SEEDS.iterdir():
        shutil.copy(f, d / f.name)
    return d


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """A copy of the seed articles for one test to change."""
    d = tmp_path / "corpus"
    shutil.copytree(SEEDS, d)
    return d


@pytest.fixture(scope="session")
def seed_index(seed_dir, tmp_path_factory) -> Path:
    from rag.index.writer import build

    d = tmp_path_factory.mktemp("index")
    report = build(d, [seed_dir])
    assert not report.errors and len(report.added) == 4
    return d


@pytest.fixture(scope="session")
def rag(seed_index):
    from rag import RAG

    return RAG.open(seed_index)


@pytest.fixture(scope="session")
def dev_questions() -> list[dict]:
    need_shared(DEV_QA)
    return [json.loads(line) for line in DEV_QA.read_text().splitlines() if line.strip()]


def read_file(path: str) -> str:
    with open(path) as f:  # exactly what a user's open(path).read() gives
        return f.read()


# A hostile shape must not make loading or splitting superlinear: a file four times as long may take
# about four times as long, never sixteen (a quadratic regex or parser loop). Comparing a file with
# its quarter in one process holds on a slow or busy machine, where a fixed seconds-per-megabyte
# budget does not (speed itself is measured by `rag bench`, not asserted in tests).
GROWTH_LIMIT = 8.0  # linear work grows 4x from a quarter to the whole; quadratic grows 16x
GROWTH_FLOOR_S = 0.05  # below this, a measurement is mostly noise


def load_and_split_cpu_seconds(path: Path, text: str, chunk_chars: int) -> tuple[float, float | None]:
    """CPU seconds to load the file at ``path`` and to split it (None if it was refused).

    The best of two runs, with the garbage collector paused: its passes cost in proportion to every
    object the test process holds, not to this file, and would otherwise swamp the growth measured.
    """
    from rag.ingest.chunking import chunk_document
    from rag.ingest.corpus import load_document
    from rag.types import RagError

    loads, splits = [], []
    for _ in range(2):
        gc.collect()
        gc.disable()
        try:
            t0 = time.process_time()  # this process's CPU time: other processes on the machine do not count
            try:
                doc = load_document(path)
            except RagError:
                doc = None
            loads.append(time.process_time() - t0)
            if doc is not None:
                t0 = time.process_time()
                chunk_document(doc, text, chunk_chars, 1)
                splits.append(time.process_time() - t0)
        finally:
            gc.enable()
    return min(loads), (min(splits) if splits else None)


def assert_linear_growth(name: str, quarter: tuple[float, float | None], whole: tuple[float, float | None]) -> None:
    """Loading and splitting the whole took at most GROWTH_LIMIT times its quarter (above the floor)."""
    for step, small, big in (("loading", quarter[0], whole[0]), ("splitting", quarter[1], whole[1])):
        if small is not None and big is not None:
            assert big < GROWTH_LIMIT * max(small, GROWTH_FLOOR_S), f"{step} {name}: {small:.2f}s for a quarter, {big:.2f}s for the whole"
