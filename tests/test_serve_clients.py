"""More real clients of ``rag serve`` on 127.0.0.1: llama-index's OpenAILike, and curl reading the raw event stream."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from rag import RAG
from rag.serve.app import chat_content, create_app

from .conftest import Q2012
from .test_serve import Running, assert_quotes_are_the_files, without_timings


@pytest.fixture(scope="module")
def extractive(seed_index):
    return RAG.open(seed_index, llm="extractive")


@pytest.fixture(scope="module")
def server(extractive):
    with Running(create_app(extractive)) as running:
        yield running


@pytest.fixture(scope="module")
def in_process(extractive):
    return extractive.ask(Q2012)


@pytest.fixture(scope="module")
def llm(server):
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(
        model="newsrag", api_base=f"{server.url}/v1", api_key="unused", is_chat_model=True, context_window=4096, max_retries=0, timeout=120
    )


def test_llama_index_openailike_gets_the_answer_and_reaches_the_citations(llm, in_process, seed_dir):
    from llama_index.core.llms import ChatMessage

    r = llm.chat([ChatMessage(role="user", content=Q2012)])
    assert r.message.content == chat_content(in_process)
    citations = r.raw.model_extra["citations"]  # the OpenAI response it wraps keeps the fields beside choices
    assert citations == [c.to_dict() for c in in_process.citations]
    assert_quotes_are_the_files(citations, seed_dir)
    assert llm.complete(Q2012).text == r.message.content  # a chat model's completion is the same chat


def test_llama_index_openailike_streams_the_same_answer(llm, in_process, seed_dir):
    from llama_index.core.llms import ChatMessage

    chunks = list(llm.stream_chat([ChatMessage(role="user", content=Q2012)]))
    assert chunks[-1].message.content == chat_content(in_process)  # the deltas, accumulated
    assert_quotes_are_the_files(chunks[-1].raw.model_extra["citations"], seed_dir)


def curl(url: str, body: dict) -> tuple[str, str]:
    """The response head (lower case) and body, as curl receives them."""
    exe = shutil.which("curl")
    if not exe:
        pytest.skip("curl is not installed")
    cmd = [exe, "-sS", "-N", "-D", "-", "-X", "POST", url, "-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    p = subprocess.run(cmd, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.decode("utf-8").partition("\r\n\r\n")
    return head.lower(), body


def events_of(stream: str) -> list[dict[str, str]]:
    """The raw server-sent events' fields; each field is one line, so a client reading lines gets whole JSON."""
    assert stream.endswith("\n\n")  # every event is closed by a blank line, the last one too
    events = []
    for block in stream[:-2].split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, sep, value = line.partition(": ")
            assert sep and name in ("event", "data") and name not in fields, block
            fields[name] = value
        events.append(fields)
    return events


def test_curl_reads_ask_as_draft_token_events_then_the_verified_answer(server, in_process):
    head, body = curl(f"{server.url}/v1/ask", {"question": Q2012, "stream": True})
    assert head.startswith("http/1.1 200") and "content-type: text/event-stream" in head and "cache-control: no-cache" in head
    parsed = events_of(body)
    assert [e["event"] for e in parsed] == ["token"] * (len(parsed) - 1) + ["answer"]
    assert "".join(json.loads(e["data"])["text"] for e in parsed[:-1]) == in_process.draft
    assert without_timings(json.loads(parsed[-1]["data"])) == without_timings(json.loads(json.dumps(in_process.to_dict())))


def test_curl_reads_chat_chunks_ending_with_done(server, in_process):
    head, body = curl(f"{server.url}/v1/chat/completions", {"model": "newsrag", "stream": True, "messages": [{"role": "user", "content": Q2012}]})
    assert head.startswith("http/1.1 200") and "content-type: text/event-stream" in head
    parsed = events_of(body)
    assert all("event" not in e for e in parsed)  # OpenAI's stream: unnamed events
    assert parsed[-1]["data"] == "[DONE]"
    chunks = [json.loads(e["data"]) for e in parsed[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == chat_content(in_process)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["citations"] == [c.to_dict() for c in in_process.citations]


def test_curl_gets_a_full_line_as_429_with_retry_after(server):
    gate = server.app.state.server.gate
    for _ in range(600):  # the previous test's answer gives its place back just after its last byte is sent
        if not gate.held:
            break
        time.sleep(0.05)
    held = 0
    while gate.reserve():  # every place in line taken, as by answers being written and waiting
        held += 1
    try:
        head, body = curl(f"{server.url}/v1/ask", {"question": Q2012, "stream": True})
    finally:
        for _ in range(held):
            gate.leave()
    # refused as a status before any event is sent, not as an event of a stream begun
    assert head.startswith("http/1.1 429") and "retry-after: " in head and "content-type: application/json" in head
    assert "\n" not in body and "busy" in json.loads(body)["error"]["message"]
