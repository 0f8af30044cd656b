"""A one-shot `rag ask` starts fast: questions are embedded without torch, and the model's
instruction prefix is evaluated once per machine, not once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from rag.index import embedding
from rag.index.reader import Index

from .conftest import Q2012, ROOT


def test_questions_are_embedded_as_the_index_was(seed_index):
    """The ONNX copy that embeds questions gives the vectors torch gave the indexed passages."""
    idx = Index.open(seed_index)
    texts = [c.text for c in idx.chunks[:24]]
    fast = embedding.embed(texts)
    bulk = embedding.embed(texts, bulk=True)
    assert fast.shape == bulk.shape == (len(texts), embedding.EMBEDDER_DIM)
    assert float((fast * bulk).sum(1).min()) > 0.9999
    # and retrieval ranks the same passages first with either
    q = embedding.embed([Q2012])[0]
    qb = embedding.embed([Q2012], bulk=True)[0]
    assert np.argsort(-(bulk @ q))[:5].tolist() == np.argsort(-(bulk @ qb))[:5].tolist()


def _ask(seed_index, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = (
        "import sys, json\n"
        "from rag.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(json.dumps(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules)), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "ask", "--index", str(seed_index), "--json", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_a_one_shot_extractive_answer_needs_no_torch(seed_index):
    r = _ask(seed_index, "--llm", "extractive", Q2012)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert not answer["abstained"] and answer["citations"]
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []  # none of the heavy libraries was imported


def test_a_question_answered_while_the_model_loads_is_printed(seed_index):
    """The model loads alongside retrieval; an answer ready before it (an abstention) is still printed."""
    r = _ask(seed_index, "--llm", "local", "--model", "qwen", "What is the capital of Australia?")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["abstained"]


def test_the_evaluated_prompt_prefix_is_saved_once_and_reused(seed_index, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "embedder").symlink_to(embedding.onnx_path().parent)  # the embedder's copy is not under test here
    env = {"RAG_CACHE_DIR": str(cache)}
    args = ("--llm", "local", "--model", "smollm", Q2012)

    first = _ask(seed_index, *args, env=env)
    assert first.returncode == 0, first.stderr
    saved = list((cache / "prefix").iterdir())
    assert len(saved) == 1 and saved[0].stat().st_size > 0

    again = _ask(seed_index, *args, env=env)
    assert again.returncode == 0, again.stderr
    assert list((cache / "prefix").iterdir()) == saved
    # the process that loaded the saved prefix answers as the one that evaluated it
    assert json.loads(again.stdout)["answer"] == json.loads(first.stdout)["answer"]

    saved[0].write_bytes(b"not a saved state")  # damaged: evaluated again and replaced
    mended = _ask(seed_index, *args, env=env)
    assert mended.returncode == 0, mended.stderr
    assert json.loads(mended.stdout)["answer"] == json.loads(first.stdout)["answer"]
    assert saved[0].stat().st_size > 100
