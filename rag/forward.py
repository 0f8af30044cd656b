"""A one-shot ``rag ask`` answered by a ``rag serve`` already running for the same index.

The server advertises itself with a small file in the cache folder (``<cache>/serve/<index key>-<pid>.json``,
written once its socket listens, removed at shutdown); ``rag ask`` finds it, checks the server would answer
exactly as this process would, and streams the question there instead of loading the model itself.

Only what the server honours per request travels with the question (the question, ``as_of``, ``since``,
``until``, ``top_k``, the server's own backend or the extractive one). Anything else that would change the
answer (another model, endpoint or key, a different threshold set in the environment) cannot be forwarded
faithfully, since a server answers with the one model it loaded and never takes a URL or key from a client,
so such a question is answered in this process as before. Stdlib HTTP only: importing httpx would cost the
one-shot more than the request does.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from .settings import Settings
from .types import Answer, AnswerSentence, Chunk, Citation, Document, Dropped, Kind, Passage, RagError, Timings

INSTANCE_HEADER = "x-newsrag-instance"  # every response of a rag serve names the run that wrote its file
CONNECT_TIMEOUT_S = 2.0  # loopback: a live server accepts at once
# the longest silence while the server's line moves (a few answers ahead, each up to ~20 s of prompt)
READ_TIMEOUT_S = 300.0

# Settings that do not change what an answer says (where files live, limits on writes and fetches, how
# long to wait): every other field must be equal on both sides, or the question is answered here.
_NOT_ANSWERING = {
    "index_dir",  # compared as the resolved folder instead
    "corpus_dir",
    "cache_dir",
    "ray",
    "ray_actor_cpus",
    "ray_actor_gpus",
    "ui_endpoints",
    "max_file_bytes",
    "max_files_per_add",
    "max_pending",
    "busy_wait_s",
    "openai_timeout_s",
    "openai_connect_timeout_s",
    "openai_total_s",
    "ask_forward",
    "top_k",  # sent with each question
    "llm",  # sent with each question; the server takes its own or extractive
}
_NOT_ANSWERING_PREFIXES = ("serve_", "fetch_")


class Unavailable(Exception):
    """The server cannot take this question (gone, busy, not the one advertised): answer it in this process."""


# ---------------------------------------------------------------- the advertisement file
def folder(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "serve"


def index_key(index_dir: str | os.PathLike) -> str:
    """The file-name key of an index folder (its resolved path hashed: one cache serves many indexes)."""
    return hashlib.sha256(os.path.realpath(index_dir).encode()).hexdigest()[:16]


def fingerprint(settings: Settings, salt: str) -> str:
    """A salted hash of the settings that shape an answer (the salt keeps the API key out of reach of a guess)."""
    values = {
        f.name: getattr(settings, f.name)
        for f in fields(settings)
        if f.name not in _NOT_ANSWERING and not f.name.startswith(_NOT_ANSWERING_PREFIXES)
    }
    model = str(values.get("local_model", ""))
    if model.endswith(".gguf") or os.sep in model:  # a relative path names another file from another folder
        values["local_model"] = os.path.realpath(model)
    values["code"] = _code()
    return hashlib.sha256((salt + json.dumps(values, sort_keys=True, default=str)).encode()).hexdigest()


def _code() -> list:
    """The package's files as installed (names, sizes, times): a server started before an upgrade or edit answers with other code."""
    root = Path(__file__).resolve().parent
    return sorted(
        (str(p.relative_to(root)), st.st_size, st.st_mtime_ns) for p in root.rglob("*") if p.suffix in (".py", ".json") for st in [p.stat()]
    )


@contextlib.contextmanager
def advertise(settings: Settings, instance: str, host: str, port: int, read_token: str = "") -> Iterator[Path]:
    """Write the file that lets ``rag ask`` find this server while the block runs; removed when it ends."""
    if host in ("0.0.0.0", "", "::"):  # listening everywhere: this machine reaches it on loopback
        host = "127.0.0.1"
    info = {
        "pid": os.getpid(),
        "url": f"http://{'[' + host + ']' if ':' in host else host}:{port}",
        "index": os.path.realpath(settings.index_dir),
        "instance": instance,
        "llm": settings.llm,
        "settings": fingerprint(settings, instance),
        "read_token": read_token,
        "started": time.time(),
    }
    where = folder(settings)
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = where / f"{index_key(settings.index_dir)}-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    # private to this user: it may carry the read token
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)  # a reader never sees half a file
    try:
        yield path
    finally:
        _remove(path, instance)


def _remove(path: Path, instance: str) -> None:
    """Remove ``path`` if it still is the file of run ``instance`` (a new server may have taken the name)."""
    with contextlib.suppress(OSError):
        if _read(path).get("instance") == instance:
            path.unlink()


def _read(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds that number: not ours, but alive
        return True
    return True


def servers(settings: Settings) -> list[tuple[Path, dict]]:
    """The live servers advertised for the index ``settings`` names, newest first; files of dead ones are removed."""
    where = folder(settings)
    if not where.is_dir():
        return []
    index = os.path.realpath(settings.index_dir)
    found = []
    for path in where.glob(f"{index_key(settings.index_dir)}-*.json"):
        info = _read(path)
        if not info or not _alive(info.get("pid")):
            with contextlib.suppress(OSError):
                path.unlink()  # a server that was killed could not remove its own
            continue
        if info.get("index") == index:
            found.append((path, info))
    return sorted(found, key=lambda pi: pi[1].get("started", 0), reverse=True)


def find(settings: Settings) -> Remote | None:
    """A server for this index that answers exactly as this process would, or None."""
    if settings.ask_forward == "off":  # auto or off: Settings refuses any other value when it is built
        return None
    for path, info in servers(settings):
        if settings.llm not in (info.get("llm"), "extractive"):
            continue
        if fingerprint(settings, str(info.get("instance"))) != info.get("settings"):
            continue
        return Remote(path, info, settings)
    return None


# ---------------------------------------------------------------- the client
class Remote:
    """The part of :class:`rag.RAG` that ``rag ask`` uses, answered by a running server."""

    def __init__(self, path: Path, info: dict, settings: Settings):
        self.path, self.info, self.settings = path, info, settings
        self.url: str = info["url"]
        self.pid: int = info["pid"]

    def check_question(self, question: str) -> str:
        """The question as given when the server will read it as this process would; else :class:`Unavailable`.

        A question this process would clean or refuse is answered here, so its error is word for word today's.
        """
        plain = isinstance(question, str) and question.strip() and len(question) <= self.settings.max_question_chars
        if not plain or any(ord(c) < 32 or ord(c) == 127 or "\ud800" <= c <= "\udfff" for c in question):
            raise Unavailable
        return question

    def join(self) -> None:
        """Nothing to wait for: no model loads in this process (``rag ask`` joins its loader)."""

    def stream(self, question: str, as_of: str | None = None, since: str | None = None, until: str | None = None) -> Iterator[str | Answer]:
        """Yield the draft as the server writes it, then the verified Answer, as :meth:`rag.RAG.stream` does."""
        from . import dates

        asked = dates.question_date(as_of)  # a bad date: this process's own error, before anything is sent
        period = dates.parse_range(since, until)
        body: dict = {"question": question, "top_k": self.settings.top_k, "backend": self.settings.llm, "stream": True}
        if asked:
            body["as_of"] = asked.isoformat()
        # the days the range stands for: the server reads them as the same range, whatever spelling was given
        if period and period.since:
            body["since"] = period.since.isoformat()
        if period and period.until:
            body["until"] = period.until.isoformat()
        yield from self._events(json.dumps(body).encode())

    def _events(self, payload: bytes) -> Iterator[str | Answer]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=CONNECT_TIMEOUT_S)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.info.get("read_token"):
            headers["Authorization"] = f"Bearer {self.info['read_token']}"
        try:
            try:
                conn.connect()
            except ConnectionRefusedError as exc:  # the server is gone and its file is stale
                _remove(self.path, str(self.info.get("instance")))
                raise Unavailable from exc
            except OSError as exc:  # alive but not accepting in time: its file stays
                raise Unavailable from exc
            conn.sock.settimeout(READ_TIMEOUT_S)
            conn.request("POST", "/v1/ask", payload, headers)
            r = conn.getresponse()
            if r.getheader(INSTANCE_HEADER) != self.info.get("instance"):  # another program now holds the port
                _remove(self.path, str(self.info.get("instance")))
                raise Unavailable
            # its line is full (429), or it refuses what this process takes (a top_k past its limit, a read
            # token it wants): answered here, as without a server, so the answer or the error is today's
            if r.status != 200:
                raise Unavailable
            yield from self._read_events(r)
        except TimeoutError as exc:
            raise RagError(
                f"the rag serve at {self.url} did not answer within {READ_TIMEOUT_S:.0f} s (RAG_ASK_FORWARD=off answers here)"
            ) from exc
        except (http.client.HTTPException, ConnectionError, ValueError, KeyError, TypeError) as exc:
            raise Unavailable from exc  # it went away mid-answer, or sent what this process cannot read: nothing is printed yet
        finally:
            conn.close()

    def _read_events(self, r: http.client.HTTPResponse) -> Iterator[str | Answer]:
        event, data = None, []
        for raw in r:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:  # a blank line ends an event
                body = json.loads("\n".join(data))
                if event == "token":
                    yield body["text"]
                elif event == "answer":
                    yield Forwarded.of(body)
                    return
                elif event == "error":
                    err = body.get("error") or {}
                    if err.get("code") == "429":
                        raise Unavailable
                    raise RagError(err.get("message") or "the server's answer failed")
                event, data = None, []
        raise Unavailable  # the stream ended without an answer


# ---------------------------------------------------------------- the answer as it came
@dataclass(frozen=True)
class Forwarded(Answer):
    """An Answer rebuilt from the server's JSON; ``to_dict`` gives that JSON back as sent (with this run's timings)."""

    wire: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, d: dict) -> Forwarded:
        passages = []
        for p in d.get("passages", []):
            doc = Document(id=p["source_file"], path="", content_hash="", title=p.get("title"), outlet=p.get("outlet"), date=p.get("date"))
            doc.inherited = dict(p.get("inherited") or {})
            chunk = Chunk(id="", doc_id=doc.id, text=p["text"], start=p["start"], end=p["end"], sentences=[])
            passages.append(Passage(p["n"], chunk, p.get("score"), doc, list(p.get("also_reported_by") or [])))
        known = {f.name for f in fields(Citation)}
        return cls(
            question=d["question"],
            text=d["answer"],
            abstained=d["abstained"],
            sentences=[AnswerSentence(**s) for s in d.get("sentences", [])],
            citations=[Citation(**{k: v for k, v in c.items() if k in known}) for c in d.get("citations", [])],
            passages=passages,
            timings=Timings(**{k: v for k, v in d.get("timings", {}).items() if k in Timings.__dataclass_fields__}),
            backend=d["backend"],
            short_answer=d.get("short_answer"),
            confidence=d.get("confidence"),
            abstain_reason=d.get("abstain_reason"),
            abstain_check=d.get("abstain_check"),
            dropped=[Dropped(**x) for x in d.get("dropped", [])],
            signals=dict(d.get("signals") or {}),
            draft=d.get("draft"),
            kind=Kind(d.get("kind", "answer")),
            notes=list(d.get("notes") or []),
            candidates=[(c["text"], c["reply_share"], c["choice_share"]) for c in d.get("candidates", [])],
            wire=d,
        )

    def to_dict(self) -> dict:
        return {**self.wire, "timings": {k: round(v, 4) for k, v in self.timings.items()}}


def note(remote: Remote) -> None:
    """Say on stderr where the answer came from (stdout is the answer, as printed in-process)."""
    print(f"(answered by the rag serve at {remote.url}, pid {remote.pid}; RAG_ASK_FORWARD=off answers in this process)", file=sys.stderr)


def new_instance() -> str:
    return uuid.uuid4().hex
