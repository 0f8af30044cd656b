"""The LLM backends for real: llama.cpp in-process, and an OpenAI-compatible server process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from rag.answer.llm import smollm_path
from rag.types import Answer, RagError

from .conftest import Q2012, read_file


def test_local_backend_streams_tokens_then_a_verified_answer(rag):
    items = list(rag.stream(Q2012, llm="local", local_model="smollm", max_answer_tokens=48))
    tokens, final = items[:-1], items[-1]
    assert tokens and all(isinstance(t, str) for t in tokens)
    assert isinstance(final, Answer) and final.backend == "local"
    assert final.timings["first_token_s"] <= final.timings["total_s"]
    # what streamed is what the model wrote, kept as the answer's draft (its "Answer:" line aside)
    streamed = " ".join("".join(tokens).split())
    assert streamed and streamed in " ".join((final.draft or "").split())
    _answered_with_real_quotes_or_withheld_by_a_named_check(final)


def _answered_with_real_quotes_or_withheld_by_a_named_check(a: Answer) -> None:
    """Whatever the small model wrote: an answer cites real quotes, and a withheld one names the check that withheld it."""
    from rag.answer.pipeline import CHECKS

    if a.abstained:
        assert a.abstain_check in CHECKS and a.abstain_reason, (a.abstain_check, a.abstain_reason)
    else:
        assert a.citations and all(s.citations for s in a.sentences)
        for c in a.citations:
            assert read_file(c.path)[c.start : c.end] == c.quote


def test_out_of_corpus_question_abstains_before_calling_the_model(rag):
    a = rag.ask("What is the capital of Australia?", llm="local", local_model="smollm")
    assert a.abstained and "generation_s" not in a.timings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server():
    """A real `python -m llama_cpp.server` on 127.0.0.1 serving the small test model."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm_path()), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("llama_cpp.server exited at start")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_backend_against_a_real_server(rag, openai_server):
    a = rag.ask(Q2012, llm="openai", openai_base_url=openai_server, openai_model="smollm", max_answer_tokens=48)
    assert a.backend == "openai" and "generation_s" in a.timings
    assert a.text and a.draft  # the endpoint's reply, kept as the draft
    _answered_with_real_quotes_or_withheld_by_a_named_check(a)


def test_unreachable_endpoint_is_a_clear_error(rag):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(RagError, match=f"cannot reach the OpenAI-compatible endpoint at {url}"):
        rag.ask(Q2012, llm="openai", openai_base_url=url)
