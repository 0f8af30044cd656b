"""The OpenAI-compatible backend against endpoints that misbehave: a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rag.cli import main
from rag.types import RagError

from .conftest import Q2012

FOREVER_LIMIT = 100_000  # chunks the "endless" stream sends before it gives up on the reader


class Endpoint(ThreadingHTTPServer):
    """Serves /<behaviour>/v1/chat/completions; records each request's headers."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.release = threading.Event()  # lets the silent handler go at teardown
        self.requests: list[dict] = []
        self.forever_sent: list[int] = []  # chunks written per endless stream before the reader left

    def url(self, behaviour: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{behaviour}/v1"


class Handler(BaseHTTPRequestHandler):
    server: Endpoint

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        behaviour = self.path.split("/")[1]
        getattr(self, "reply_" + behaviour)()

    def _send(self, kind: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_silent(self):
        self.server.release.wait(30)

    def reply_html(self):
        self._send("text/html; charset=utf-8", b"<!doctype html><html><body><form>Sign in</form></body></html>")

    def reply_ok(self):
        chunk = {"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hamas backed the uprising in Syria."}}]}
        self._send("text/event-stream", f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())

    reply_listed = reply_ok  # the same reply at a second URL

    def reply_whole(self):
        message = {"role": "assistant", "content": "Hamas backed the uprising against Assad."}
        self._send("application/json", json.dumps({"id": "x", "choices": [{"index": 0, "message": message}]}).encode())

    def reply_badjson(self):
        self._send("application/json", b'{"choices": [{"message": ')

    def reply_nochoices(self):
        self._send("application/json", b'{"id": "x", "object": "chat.completion"}')

    def reply_badsse(self):
        self._send("text/event-stream", b"data: {not json\n\n")

    def reply_forever(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"zork "}}]}\n\n'
        sent = 0
        try:
            while sent < FOREVER_LIMIT:
                self.wfile.write(chunk)
                sent += 1
        except OSError:  # the reader closed the stream
            pass
        self.server.forever_sent.append(sent)


@pytest.fixture()
def endpoint():
    srv = Endpoint()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def test_an_endpoint_that_never_answers_fails_within_the_timeout(rag, endpoint):
    url = endpoint.url("silent")
    with pytest.raises(RagError) as err:
        rag.ask(Q2012, llm="openai", openai_base_url=url, openai_timeout_s=1.5)
    assert str(err.value) == f"the endpoint at {url} did not answer within 1.5 s"
    assert len(endpoint.requests) == 1  # no silent retry
    # the wait itself, without retrieval and context selection before it
    llm = rag.llm(rag.settings.with_(llm="openai", openai_base_url=url, openai_timeout_s=1.5))
    t0 = time.perf_counter()
    with pytest.raises(RagError, match="did not answer within 1.5 s"):
        list(llm.stream([{"role": "user", "content": "Who cut the ribbon?"}], 16, 0.0))
    assert time.perf_counter() - t0 < 1.5 + 1.0
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize(
    "behaviour, what",
    [
        ("html", "got text/html"),
        ("badjson", "the reply is not valid JSON"),
        ("nochoices", "the reply has no choices[0].message.content"),
        ("badsse", "the reply is not valid JSON"),
    ],
)
def test_a_reply_that_is_not_the_openai_api_is_one_clear_line(rag, endpoint, behaviour, what):
    url = endpoint.url(behaviour)
    with pytest.raises(RagError) as err:
        rag.ask(Q2012, llm="openai", openai_base_url=url)
    msg = str(err.value)
    assert msg.startswith(f"the endpoint at {url} did not reply as an OpenAI-compatible API: {what}"), msg
    assert "\n" not in msg and "unexpected" not in msg.lower()


def test_the_cli_prints_one_error_line_for_an_html_login_page(seed_index, endpoint, capsys):
    url = endpoint.url("html")
    code = main(["ask", Q2012, "--index", str(seed_index), "--llm", "openai", "--base-url", url])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"error: the endpoint at {url} did not reply as an OpenAI-compatible API: got text/html\n"


def test_the_cli_names_the_configured_timeout(seed_index, endpoint, capsys, monkeypatch):
    monkeypatch.setenv("RAG_OPENAI_TIMEOUT_S", "1")
    url = endpoint.url("silent")
    code = main(["ask", Q2012, "--index", str(seed_index), "--llm", "openai", "--base-url", url])
    assert code == 1
    assert capsys.readouterr().err == f"error: the endpoint at {url} did not answer within 1 s\n"


def test_an_endless_stream_is_cut_at_max_answer_tokens_and_closed(rag, endpoint):
    items = list(rag.stream(Q2012, llm="openai", openai_base_url=endpoint.url("forever"), max_answer_tokens=20))
    answer = items[-1]
    assert answer.draft.count("zork") <= 20
    deadline = time.time() + 10
    while not endpoint.forever_sent and time.time() < deadline:
        time.sleep(0.05)
    assert endpoint.forever_sent and endpoint.forever_sent[0] < FOREVER_LIMIT  # the reader hung up


def test_an_endpoint_that_sends_the_whole_reply_at_once_is_read(rag, endpoint):
    a = rag.ask(Q2012, llm="openai", openai_base_url=endpoint.url("whole"))
    assert "Hamas backed the uprising against Assad" in a.draft
    assert json.loads(endpoint.requests[-1]["body"])["stream"] is True  # it was asked to stream
