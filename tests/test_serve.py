"""``rag serve`` over real HTTP on 127.0.0.1: the official openai client, plain httpx, and a fake upstream that leaks keys."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from rag import RAG
from rag.serve.app import create_app

from .conftest import Q2012, read_file

KEY = "sk-upstream-0123456789abcdef-SECRET"  # the operator's key for an upstream endpoint: never in a response


class Running:
    """A real uvicorn server for an app on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app):
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        for _ in range(600):  # started within a minute on a busy machine
            if self.server.started:
                return self
            time.sleep(0.1)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="module")
def extractive(seed_index):
    """The RAG a server answers with: the extractive backend, a real upstream key configured, one waiting place."""
    return RAG.open(seed_index, llm="extractive", openai_api_key=KEY, serve_queue=1)


@pytest.fixture(scope="module")
def server(extractive):
    with Running(create_app(extractive)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="anything", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def in_process(extractive):
    return extractive.ask(Q2012)


def without_timings(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "timings"}


def assert_quotes_are_the_files(citations: list[dict], seed_dir: Path) -> None:
    assert citations
    for c in citations:
        assert read_file(str(seed_dir / c["source_file"]))[c["start"] : c["end"]] == c["quote"]


def assert_one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert "\n" not in r.text and "Traceback" not in r.text
    message = r.json()["error"]["message"]
    assert message
    return message


def test_the_openai_client_gets_the_2012_answer_with_citations_that_are_the_files(client, in_process, seed_dir):
    r = client.chat.completions.create(model="newsrag", messages=[{"role": "user", "content": Q2012}])
    content = r.choices[0].message.content
    assert content.startswith(in_process.text) and "[1]" in content
    citations = r.model_extra["citations"]
    assert citations == [c.to_dict() for c in in_process.citations]
    assert_quotes_are_the_files(citations, seed_dir)
    for c in citations:  # the readable block carries each quote too
        assert f"“{c['quote']}”" in content and f"chars {c['start']}-{c['end']}" in content
    assert r.model_extra["abstained"] is False
    assert [m.id for m in client.models.list().data] == ["newsrag"]


def test_the_openai_client_streams_the_same_answer(client, in_process, seed_dir):
    plain = client.chat.completions.create(model="newsrag", messages=[{"role": "user", "content": Q2012}])
    chunks = list(client.chat.completions.create(model="newsrag", messages=[{"role": "user", "content": Q2012}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert_quotes_are_the_files(chunks[-1].model_extra["citations"], seed_dir)
    assert chunks[-1].model_extra["citations"] == plain.model_extra["citations"]


def test_earlier_turns_feed_the_follow_up_rewrite(client, extractive):
    first = client.chat.completions.create(model="newsrag", messages=[{"role": "user", "content": Q2012}])
    follow = "And what happened in 2014?"
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": Q2012},
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": follow},
    ]
    r = client.chat.completions.create(model="newsrag", messages=messages)
    answer_text = first.choices[0].message.content.split("\n\nSources:\n")[0]
    assert r.model_extra["standalone_question"] == extractive.rewrite([(Q2012, answer_text)], follow)
    assert "Iran and Hamas" in r.model_extra["standalone_question"]


def test_ask_returns_the_json_of_rag_ask(server, extractive, seed_dir):
    r = httpx.post(f"{server.url}/v1/ask", json={"question": Q2012, "since": "2012", "top_k": 5}, timeout=120)
    assert r.status_code == 200
    local = extractive.ask(Q2012, since="2012", top_k=5).to_dict()
    assert without_timings(r.json()) == without_timings(json.loads(json.dumps(local)))
    assert_quotes_are_the_files(r.json()["citations"], seed_dir)


def test_ask_streams_server_sent_events_ending_with_the_verified_answer(server, in_process):
    events = []
    with httpx.stream("POST", f"{server.url}/v1/ask", json={"question": Q2012, "stream": True}, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    assert [e for e, _ in events[:-1]] == ["token"] * (len(events) - 1)
    kind, answer = events[-1]
    assert kind == "answer" and without_timings(answer) == without_timings(json.loads(json.dumps(in_process.to_dict())))


def test_a_full_queue_is_refused_with_429_and_retry_after(server, extractive):
    gate = server.app.state.server.gate
    waiting: list[httpx.Response] = []
    with gate._turn:  # an answer being written: the next requests wait in line
        threads = [
            threading.Thread(target=lambda: waiting.append(httpx.post(f"{server.url}/v1/ask", json={"question": Q2012}, timeout=120)))
            for _ in range(gate.capacity - 1)
        ]
        for t in threads:
            t.start()
        while gate.held < gate.capacity - 1:
            time.sleep(0.05)
        gate.reserve()  # the answer being written holds the last place
        try:
            for stream in (False, True):
                r = httpx.post(f"{server.url}/v1/ask", json={"question": Q2012, "stream": stream}, timeout=30)
                assert "busy" in assert_one_line_error(r, 429)
                assert int(r.headers["retry-after"]) >= 1
            r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": Q2012}]}, timeout=30)
            assert_one_line_error(r, 429)
        finally:
            gate.leave()
    for t in threads:
        t.join(120)
    assert [r.status_code for r in waiting] == [200] * (gate.capacity - 1)  # those in line were answered, not lost


def test_an_over_long_question_is_one_line_of_json(server, client):
    r = httpx.post(f"{server.url}/v1/ask", json={"question": "why " * 600}, timeout=30)
    assert "the limit is 2,000" in assert_one_line_error(r, 400)
    with pytest.raises(openai.BadRequestError, match="the limit is 2,000"):
        client.chat.completions.create(model="newsrag", messages=[{"role": "user", "content": "why " * 600}])


def test_a_body_past_the_limit_and_a_malformed_request_are_one_line_of_json(server):
    r = httpx.post(f"{server.url}/v1/ask", content=b'{"question": "' + b"a" * 300_000 + b'"}', headers={"content-type": "application/json"})
    assert "larger than 256,000 bytes" in assert_one_line_error(r, 413)
    assert "messages" in assert_one_line_error(httpx.post(f"{server.url}/v1/chat/completions", json={"model": "x"}), 422)
    assert_one_line_error(httpx.post(f"{server.url}/v1/ask", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert "answers with the extractive backend" in assert_one_line_error(
        httpx.post(f"{server.url}/v1/ask", json={"question": Q2012, "backend": "local"}), 400
    )
    assert_one_line_error(httpx.get(f"{server.url}/nowhere"), 404)


class Leaky(BaseHTTPRequestHandler):
    """An upstream that refuses the key and quotes it back, as some APIs do."""

    seen: list[str] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization", "")
        Leaky.seen.append(auth)
        body = json.dumps(
            {"error": {"message": f"Incorrect API key provided: {auth.removeprefix('Bearer ')}", "type": "invalid_request_error"}}
        )
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


def test_the_upstream_api_key_never_appears_in_any_response(seed_index, server, caplog):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Leaky)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    rag = RAG.open(seed_index, llm="openai", openai_base_url=url, openai_api_key=KEY, openai_model="m", openai_timeout_s=10.0)
    seen: list[bytes] = []
    try:
        with Running(create_app(rag)) as leaky:
            for base in (leaky.url, server.url):
                chat = {"messages": [{"role": "user", "content": Q2012}]}
                for path, body in (("/v1/chat/completions", chat), ("/v1/ask", {"question": Q2012})):
                    for stream in (False, True):
                        r = httpx.post(base + path, json={**body, "stream": stream}, timeout=120)
                        seen.append(r.content + json.dumps(dict(r.headers)).encode())
                for path in ("/healthz", "/v1/models", "/openapi.json", "/docs"):
                    r = httpx.get(base + path)
                    seen.append(r.content + json.dumps(dict(r.headers)).encode())
            r = httpx.post(leaky.url + "/v1/ask", json={"question": Q2012})
            message = assert_one_line_error(r, 400)
    finally:
        upstream.shutdown()
    assert f"Bearer {KEY}" in Leaky.seen  # the key did go to the operator's endpoint, which quoted it back
    # the visitor gets the status, never the upstream's body (which quoted the key back)
    assert "answered HTTP 401" in message and KEY not in message and "Incorrect API key" not in message
    assert "answered HTTP 401" in caplog.text and KEY not in caplog.text  # the operator's log has the body, without the key
    for body in seen:
        assert KEY.encode() not in body and KEY[3:20].encode() not in body


def test_articles_are_listed_as_rag_list_lists_them(server, seed_index):
    r = httpx.get(f"{server.url}/v1/articles", params={"since": "2013", "sort": "date"})
    listed = r.json()["articles"]
    p = subprocess.run(
        [sys.executable, "-m", "rag.cli", "list", "--index", str(seed_index), "--since", "2013"], capture_output=True, text=True
    )
    assert [a["id"] for a in listed] == [re.search(r"chunks  (\S+)", line).group(1) for line in p.stdout.splitlines()]
    assert listed and all(a["chunks"] >= 1 and "path" not in a for a in listed)
    assert (r.json()["undated_left_out"] > 0) == ("undated" in p.stderr)
    assert "not a date" in assert_one_line_error(httpx.get(f"{server.url}/v1/articles", params={"since": "2013-02-30"}), 400)


ARTICLE = b"""Harbour bridge reopens after repairs

The Kestrel harbour bridge reopened on Monday after eight months of repairs, the city council said.
Engineers replaced 42 cables that had corroded in the salt air, at a cost of 3.1 million euros.
"""


def test_writes_are_off_without_a_token(server):
    r = httpx.post(f"{server.url}/v1/articles", files={"files": ("bridge.txt", ARTICLE, "text/plain")})
    assert "RAG_SERVE_TOKEN" in assert_one_line_error(r, 403)
    assert_one_line_error(httpx.delete(f"{server.url}/v1/articles/000_7d385fec3d1c01e6.txt"), 403)


def test_articles_are_added_and_removed_with_the_token_only(corpus, tmp_path):
    rag = RAG.build(tmp_path / "index", [corpus], llm="extractive", serve_token="t0ken-for-writes", corpus_dir=str(corpus))
    with Running(create_app(rag)) as running:
        url, auth = f"{running.url}/v1/articles", {"Authorization": "Bearer t0ken-for-writes"}
        upload = {"files": ("../../bridge.txt", ARTICLE, "text/plain")}
        assert_one_line_error(httpx.post(url, files=upload), 401)
        assert_one_line_error(httpx.post(url, files=upload, headers={"Authorization": "Bearer wrong"}), 401)
        r = httpx.post(url, files=upload, headers=auth, timeout=300)
        assert r.status_code == 200 and r.json()["lines"][0]["kind"] == "ok", r.text
        assert (corpus / "bridge.txt").read_bytes() == ARTICLE and not (tmp_path / "bridge.txt").exists()
        assert "bridge.txt" in [a["id"] for a in httpx.get(url).json()["articles"]]
        answer = httpx.post(
            f"{running.url}/v1/ask", json={"question": "How many cables were replaced on the Kestrel bridge?"}, timeout=120
        ).json()
        assert any(c["source_file"] == "bridge.txt" for c in answer["citations"])
        refused = httpx.post(url, files={"files": ("tool.exe", b"MZ\x90\x00", "application/octet-stream")}, headers=auth, timeout=60)
        assert refused.status_code == 400 and refused.json()["lines"][0]["kind"] == "error"
        assert_one_line_error(httpx.delete(f"{url}/bridge.txt"), 401)
        assert httpx.delete(f"{url}/bridge.txt", headers=auth, timeout=300).status_code == 200
        assert "bridge.txt" not in [a["id"] for a in httpx.get(url).json()["articles"]]
        assert_one_line_error(httpx.delete(f"{url}/bridge.txt", headers=auth), 404)


def test_openapi_lists_every_endpoint(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/models", "/v1/ask", "/v1/articles", "/healthz"} <= set(spec["paths"])
    # a request may name any backend rag ask takes, and the schema says which
    backends = [
        choice["enum"]
        for model in spec["components"]["schemas"].values()
        for choice in model.get("properties", {}).get("backend", {}).get("anyOf", [])
        if "enum" in choice
    ]
    assert backends and all(b == ["local", "openai", "extractive"] for b in backends)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rag_serve_answers_as_rag_ask_json_does(seed_index):
    port = free_port()
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--index", str(seed_index), "--llm", "extractive", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(1200):  # the process imports and opens the index first
            try:
                health = httpx.get(f"{url}/healthz")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        assert health.json() == {"status": "ok", "articles": 4, "backend": "extractive", "waiting": 0}
        served = httpx.post(f"{url}/v1/ask", json={"question": Q2012}, timeout=120).json()
        # taken now: a second server on the port refuses in one line, before loading anything
        taken = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert taken.returncode == 1 and taken.stderr.strip().count("\n") == 0 and f"cannot serve on 127.0.0.1:{port}" in taken.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    one_shot = subprocess.run(
        [*cmd[:3], "ask", Q2012, "--index", str(seed_index), "--llm", "extractive", "--json"], capture_output=True, text=True
    )
    assert without_timings(served) == without_timings(json.loads(one_shot.stdout))


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    """schemathesis's own command over the served OpenAPI spec: every endpoint, valid and invalid requests."""
    st = Path(sys.executable).with_name("schemathesis")
    if not st.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")
    report = tmp_path / "report.json"
    cmd = [str(st), "run", f"{server.url}/openapi.json", "--max-examples", "25", "--seed", "1", "--request-timeout", "120"]
    # a schema cannot say everything a request must be (a date that exists, a conversation whose last user
    # message is a question), so a schema-valid request may be refused with a 400: that check is left out
    cmd += ["--exclude-checks", "positive_data_acceptance"]
    p = subprocess.run(
        [*cmd, "--report", "json", "--report-json-path", str(report)], capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert p.returncode == 0, p.stdout[-4000:]
    generated = re.search(r"(\d+) generated", p.stdout)
    assert generated and int(generated.group(1)) >= 100, p.stdout[-2000:]  # it did test: every operation, many cases
    print(f"schemathesis: {generated.group(0)} test cases")
