"""Recorded drafts: a run replayed on what the model wrote gives the same answers, and a changed prompt is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rag import RAG
from rag.answer.drafts import DRAFTS_FILE, RecordingLLM, ReplayLLM
from rag.eval import Question, evaluate
from rag.types import RagError

SMALL = {"llm": "local", "local_model": "smollm", "max_answer_tokens": 48}
QUESTIONS = [
    Question("a", "Why did ties between Iran and Hamas break down in 2012?", True, [], [["Damascus"]]),
    Question("b", "Which Hamas leader was slated to visit Tehran according to the 2017 reports?", True, [], [["Haniyeh"]]),
    Question("c", "Who declared that Hamas had formed a joint command with Islamic Jihad?", True, [], [["Zahar"]]),
    Question("d", "What is the capital of Australia?", False),
]


def test_replaying_an_unchanged_pipeline_reproduces_every_verdict(seed_index, tmp_path):
    rag = RAG.open(seed_index, **SMALL)
    rag.use_llm(RecordingLLM(rag.llm(rag.settings), tmp_path))
    recorded = evaluate(rag, QUESTIONS)
    rows = [json.loads(line) for line in (tmp_path / DRAFTS_FILE).read_text().splitlines()]
    assert len(rows) >= 3 and all(r["text"] and r["tokens"] for r in rows)  # the model wrote, and its token probabilities were kept

    again = RAG.open(seed_index, **SMALL)
    again.use_llm(ReplayLLM(tmp_path))
    replayed = evaluate(again, QUESTIONS)
    assert [(r.abstained, r.answer, r.abstain_check, r.abstain_reason) for r in replayed.rows] == [
        (r.abstained, r.answer, r.abstain_check, r.abstain_reason) for r in recorded.rows
    ]
    assert replayed.metrics == recorded.metrics


def test_a_prompt_the_recording_does_not_hold_is_refused(tmp_path):
    (tmp_path / DRAFTS_FILE).write_text("")
    replay = ReplayLLM(tmp_path)
    with pytest.raises(RagError, match="record the run again"):
        list(replay.stream([{"role": "user", "content": "a question never recorded"}], 48, 0.0))


def test_eval_replay_needs_a_recording_and_a_judge_without_a_model(seed_index, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is the capital of Australia?", "answerable": False}) + "\n")
    base = [sys.executable, "-m", "rag.cli", "eval", "--index", str(seed_index), str(qa), "--out", str(tmp_path / "out")]
    missing = subprocess.run(base + ["--replay", str(tmp_path / "nothing"), "--judge", "none"], capture_output=True, text=True)
    assert missing.returncode != 0 and "no drafts.jsonl there" in missing.stderr and "Traceback" not in missing.stderr
    judged = subprocess.run(base + ["--replay", str(tmp_path), "--judge", "llm"], capture_output=True, text=True)
    assert judged.returncode != 0 and "--judge overlap" in judged.stderr and "Traceback" not in judged.stderr
