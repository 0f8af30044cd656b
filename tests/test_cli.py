"""The `rag` command as a user runs it: JSON shape, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import Q2012, read_file

JSON_KEYS = {"question", "answer", "abstained", "citations", "passages", "timings", "backend"}
CITATION_KEYS = {"n", "source_file", "title", "outlet", "date", "quote", "start", "end"}


def rag_cmd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )


def test_ask_json_has_the_stable_shape(seed_index, seed_dir):
    p = rag_cmd("ask", Q2012, "--llm", "extractive", "--json", "--index", str(seed_index))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert JSON_KEYS <= set(out) and out["backend"] == "extractive" and out["abstained"] is False
    assert out["citations"]
    for c in out["citations"]:
        assert CITATION_KEYS <= set(c)
        assert "/" not in c["source_file"]
        assert read_file(str(seed_dir / c["source_file"]))[c["start"] : c["end"]] == c["quote"]


def test_index_dir_from_the_environment(seed_index):
    p = rag_cmd("ask", Q2012, "--llm", "extractive", "--json", env={"RAG_INDEX_DIR": str(seed_index)})
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", "   "], "the question is empty"),
        (["ask", "why " * 600], "characters long; the limit is 2,000"),
        (["ask", "anything", "--index", "/nonexistent/index"], "no index at /nonexistent/index"),
        (["ask", Q2012, "--llm", "openai", "--base-url", "http://127.0.0.1:9/v1"], "cannot reach the OpenAI-compatible endpoint"),
    ],
)
def test_bad_input_is_one_clear_line_and_nonzero_exit(seed_index, args, message):
    if "--index" not in args:
        args = [*args, "--index", str(seed_index)]
    p = rag_cmd(*args)
    assert p.returncode != 0
    assert message in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_index_reports_bad_files_keeps_the_rest_and_exits_nonzero(tmp_path, seed_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for f in seed_dir.glob("*.txt"):
        (corpus / f.name).write_bytes(f.read_bytes())
    (corpus / "blank.md").write_text("\n\n")
    (corpus / "image.html").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (corpus / "latin1.txt").write_bytes("Déjà vu in Zürich".encode("latin-1"))
    idx = tmp_path / "idx"
    p = rag_cmd("index", str(corpus), "--index", str(idx))
    assert p.returncode == 1
    assert "blank.md: empty file" in p.stderr and "image.html: binary file" in p.stderr and "latin1.txt: not UTF-8" in p.stderr
    assert "4 added" in p.stdout
    listing = rag_cmd("list", "--index", str(idx))
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 4
    assert "same report as 003_40096b35d0a24c1b.txt" in listing.stdout
    assert "2014-03-25" in listing.stdout and "The Algemeiner" in listing.stdout


def test_corrupt_index_is_detected(tmp_path, seed_dir):
    idx = tmp_path / "idx"
    assert rag_cmd("index", str(seed_dir), "--index", str(idx)).returncode == 0
    (segment,) = (idx / "segments").glob("seg-*")
    (segment / "vectors.npy").write_bytes(b"garbage")
    p = rag_cmd("ask", Q2012, "--index", str(idx), "--llm", "extractive")
    assert p.returncode == 1 and "corrupt" in p.stderr and "--rebuild" in p.stderr
    assert rag_cmd("index", "--rebuild", "--index", str(idx)).returncode == 0  # sources remembered
    assert rag_cmd("ask", Q2012, "--index", str(idx), "--llm", "extractive").returncode == 0
