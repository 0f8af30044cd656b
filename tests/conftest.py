"""Shared fixtures: a real index of the seed articles, built once per test session."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
DEV_QA = ROOT.parent / "shared" / "eval" / "seed_qa_dev.jsonl"
Q2012 = "Why did ties between Iran and Hamas break down in 2012?"


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
    from rag.index import build

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
    if not DEV_QA.exists():
        pytest.skip(f"dev QA set not found at {DEV_QA}")
    return [json.loads(line) for line in DEV_QA.read_text().splitlines() if line.strip()]


def read_file(path: str) -> str:
    with open(path) as f:  # exactly what a user's open(path).read() gives
        return f.read()
