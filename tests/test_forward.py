"""A one-shot ``rag ask`` with a ``rag serve`` running for the same index: sent there, printed as in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rag import forward
from rag.settings import Settings

from .conftest import Q2012

READ_TOKEN = "r3ad-t0ken-for-questions"
THROUGH = "answered by the rag serve"


def rag_cmd(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rag.cli", *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def start_serve(index, *more: str, **env: str) -> tuple[subprocess.Popen, dict]:
    """A ``rag serve`` process and the file it advertises itself with."""
    cmd = [sys.executable, "-m", "rag.cli", "serve", "--index", str(index), "--llm", "extractive", "--port", "0", *more]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    settings = Settings.from_env(index_dir=str(index))
    for _ in range(6000):  # it imports and opens the index first (a busy machine: minutes)
        mine = [info for _, info in forward.servers(settings) if info["pid"] == proc.pid]
        if mine:
            return proc, mine[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise RuntimeError("rag serve did not advertise itself")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(120)


@pytest.fixture(scope="module")
def served(seed_index):
    """A rag serve for the seed index, reads behind a token (rag ask finds the token in the server's file)."""
    proc, info = start_serve(seed_index, RAG_SERVE_READ_TOKEN=READ_TOKEN)
    yield info
    stop(proc)


def ask(index, *args: str, **env: str) -> subprocess.CompletedProcess:
    return rag_cmd("ask", *args, "--index", str(index), "--llm", "extractive", **env)


def without_timings(out: str) -> dict:
    d = json.loads(out)
    d.pop("timings")
    return d


@pytest.mark.parametrize(
    "args",
    [
        [Q2012],
        [Q2012, "--json"],
        [Q2012, "--json", "--top-k", "2", "--since", "2013", "--until", "2014-12"],
        ["Which country helped broker the reconciliation between Hamas and Iran in 2014?", "--as-of", "2014-03-26"],
        ["What is the capital of Australia?"],  # abstains: the related passages are printed too
    ],
)
def test_rag_ask_through_the_server_prints_what_it_prints_in_process(served, seed_index, args):
    through = ask(seed_index, *args)
    here = ask(seed_index, *args, RAG_ASK_FORWARD="off")
    assert through.returncode == 0 and here.returncode == 0, through.stderr + here.stderr
    assert THROUGH in through.stderr and f"pid {served['pid']}" in through.stderr and THROUGH not in here.stderr
    if "--json" in args:
        assert without_timings(through.stdout) == without_timings(here.stdout)
    else:
        assert through.stdout == here.stdout and through.stdout.strip()


@pytest.mark.parametrize(
    "args, env, error",
    [
        # another backend and endpoint than the server's: answered here, so the error is this process's own
        (["--llm", "openai", "--base-url", "http://127.0.0.1:9/v1"], {}, "cannot reach the OpenAI-compatible endpoint"),
        (["--llm", "extractive", "--as-of", "2014-13-01"], {}, "as_of must be an ISO date"),  # checked before anything is sent
        (["--llm", "extractive", "--since", "2015", "--until", "2014"], {}, "since 2015 is after until 2014"),
        (["--llm", "extractive"], {"RAG_ASK_FORWARD": "sometimes"}, "ask_forward is 'sometimes' (RAG_ASK_FORWARD): it must be one of auto, off"),
    ],
)
def test_what_the_server_cannot_answer_as_this_process_gets_todays_error(served, seed_index, args, env, error):
    p = rag_cmd("ask", Q2012, "--index", str(seed_index), *args, **env)
    assert p.returncode == 1 and error in p.stderr
    assert THROUGH not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_an_empty_question_and_other_settings_are_answered_in_process(served, seed_index):
    empty = ask(seed_index, "   ")
    assert empty.returncode == 1 and "the question is empty" in empty.stderr and THROUGH not in empty.stderr
    # a threshold the server was not started with would change the answer: not sent there
    strict = ask(seed_index, Q2012, "--json", RAG_MIN_RELEVANCE="0.99")
    assert strict.returncode == 0 and THROUGH not in strict.stderr and json.loads(strict.stdout)["abstained"] is True


def test_reads_need_the_read_token_and_the_health_check_does_not(served):
    url = served["url"]
    r = httpx.post(f"{url}/v1/ask", json={"question": Q2012}, timeout=120)
    assert r.status_code == 401 and "RAG_SERVE_READ_TOKEN" in r.json()["error"]["message"] and "\n" not in r.text
    assert httpx.get(f"{url}/v1/articles", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/v1/articles", headers={"Authorization": f"Bearer {READ_TOKEN}"}).status_code == 200
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_the_file_goes_at_shutdown_and_stale_files_are_passed_over_and_removed(seed_index, tmp_path):
    settings = Settings.from_env(index_dir=str(seed_index))
    proc, info = start_serve(seed_index)
    stop(proc)
    assert not [i for _, i in forward.servers(settings) if i["pid"] == proc.pid]  # removed at shutdown
    # the files a killed server leaves: its pid gone; a live pid whose port refuses; a port now held by another run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live, survivor = start_serve(seed_index)
    try:
        where = forward.folder(settings)
        key = forward.index_key(seed_index)
        planted = []
        for pid, url, instance in (
            (dead.pid, info["url"], "a" * 32),
            (os.getpid(), info["url"], "b" * 32),  # the stopped server's port: nothing listens there
            (os.getppid(), survivor["url"], "c" * 32),  # the live server's port, another run's file
        ):
            fake = {**info, "pid": pid, "url": url, "instance": instance, "started": time.time() + 10}
            fake["settings"] = forward.fingerprint(settings.with_(llm="extractive"), instance)
            path = where / f"{key}-{pid}.json"
            path.write_text(json.dumps(fake))
            planted.append(path)
        for _ in planted[1:]:  # each ask passes over one stale file (the newest) and answers here
            p = ask(seed_index, Q2012, "--json")
            assert p.returncode == 0 and THROUGH not in p.stderr, p.stderr
        assert not any(path.exists() for path in planted)
        p = ask(seed_index, Q2012, "--json")  # the live server's own file is left, and used
        assert p.returncode == 0 and f"pid {live.pid}" in p.stderr
    finally:
        stop(live)


def test_a_server_started_before_the_code_changed_is_passed_over(served, seed_index):
    source = Path(forward.__file__)
    st = source.stat()
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as an edit or an upgrade does
        p = ask(seed_index, Q2012)
        assert p.returncode == 0 and THROUGH not in p.stderr
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert THROUGH in ask(seed_index, Q2012).stderr  # the same code again: the server answers
