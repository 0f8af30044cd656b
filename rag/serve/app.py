"""``rag serve``: the RAG object over HTTP, an OpenAI-compatible chat endpoint and a REST API that carry the citations.

One process, one opened :class:`rag.RAG` (the index and model the UI uses); this module answers
nothing itself. Answers run one at a time on a worker thread, a few more wait, and the rest are
refused with 429 and ``Retry-After``. Every response body, errors included, is JSON of one line
(or server-sent events of such lines), and the upstream API key is scrubbed from all of it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import dates, forward
from ..api import RAG
from ..index import writer as index_writer  # the name writer is the write-token check below
from ..ingest.uploads import Uploads, safe_name
from ..settings import Settings
from ..types import Answer, RagError
from .wire import (
    ERRORS,
    MODEL_ID,
    PERIOD,
    SSE_CONTENT,
    ArticleList,
    AskAnswer,
    AskRequest,
    ChatCompletion,
    ChatMessage,
    ChatRequest,
    ErrorBody,
    Filters,
    Health,
    ModelList,
    UploadReport,
)

log = logging.getLogger("rag.serve")
SOURCES_HEADING = "Sources:"


# ---------------------------------------------------------------- one answer at a time
class Gate:
    """One answer running, ``waiting`` more in line; a request past that is refused at once."""

    def __init__(self, waiting: int):
        self.capacity = 1 + max(0, waiting)
        self._held = 0
        self._count = threading.Lock()
        self._turn = threading.Lock()
        self._mean_s = 5.0  # a guess until answers are timed: what Retry-After says per answer ahead

    def reserve(self) -> bool:
        """Take a place in line; False when the line is full."""
        with self._count:
            if self._held >= self.capacity:
                return False
            self._held += 1
            return True

    def leave(self) -> None:
        with self._count:
            self._held -= 1

    @property
    def held(self) -> int:
        return self._held

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the answers ahead at their recent mean."""
        return max(1, round(self._mean_s * self._held))

    def run(self, work: Callable[[], None]) -> None:
        """Run ``work`` when its turn comes (a place must be reserved), then give the place back."""
        try:
            with self._turn:
                t0 = time.perf_counter()
                work()
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.perf_counter() - t0)
        finally:
            self.leave()


class Busy(Exception):
    """The line is full."""


# ---------------------------------------------------------------- the app
class Server:
    """The routes' shared state: the RAG, its gate, and what must never leave the process."""

    def __init__(self, rag: RAG):
        self.rag = rag
        self.settings: Settings = rag.settings
        self.gate = Gate(self.settings.serve_queue)
        self.instance = forward.new_instance()  # named on every response, so rag ask knows it reached this run
        key = self.settings.openai_api_key or ""
        # the default placeholder is no secret; a real key is scrubbed from every byte sent
        self._secret = key if len(key) >= 8 and key != Settings.openai_api_key else ""

    def public(self, text: str) -> str:
        """``text`` with the upstream API key removed."""
        return text.replace(self._secret, "[key withheld]") if self._secret else text

    def dumps(self, obj: object) -> str:
        """One line of JSON, scrubbed."""
        return self.public(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))

    def json(self, obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(self.dumps(obj), status_code=status, media_type="application/json", headers=headers)

    def error(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> Response:
        line = " ".join(str(message).split())  # one line, whatever the message held
        return self.json({"error": {"message": line, "type": kind, "code": str(status)}}, status, headers)

    def busy(self) -> Response:
        wait = self.gate.retry_after()
        msg = f"busy: an answer is being written and {self.gate.capacity - 1} more are waiting; try again in {wait} s"
        return self.error(429, msg, "rate_limit_error", {"Retry-After": str(wait)})

    def fresh(self, overrides: dict) -> None:
        """Start a local model's answer from its primed prefix, as a fresh process does: the answer is a one-shot ``rag ask``'s."""
        llm = self.rag.llm(self.settings.with_(**overrides))
        if hasattr(llm, "rewind"):
            llm.rewind()

    def overrides(self, req: Filters) -> dict:
        """Settings for one request: the client may choose the server's backend or the extractive one, never a URL or key.

        Its dates are checked here too, so that a bad one is a 400, not an error event in a stream already begun.
        """
        dates.parse_range(req.since, req.until)
        if req.as_of:
            try:
                date.fromisoformat(req.as_of)
            except ValueError as exc:
                raise RagError(f"as_of must be an ISO date (YYYY-MM-DD), not {req.as_of!r}") from exc
        o: dict = {"top_k": req.top_k}
        if req.backend and req.backend not in (self.settings.llm, "extractive"):
            allowed = " or ".join(dict.fromkeys((self.settings.llm, "extractive")))
            raise RagError(f"this server answers with the {self.settings.llm} backend: ask for {allowed}")
        o["llm"] = req.backend
        return o

    async def produce(self, items: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        """Run ``items`` on the worker thread in its turn and yield what it yields; its exception is raised here.

        The whole generator runs on one thread (RAG.stream holds a slot and a context across its
        yields), and runs to the end even if the client leaves, so the gate is never freed early.
        """
        if not self.gate.reserve():
            raise Busy
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        def work() -> None:
            try:
                for item in items():
                    loop.call_soon_threadsafe(queue.put_nowait, (item, None))
            except BaseException as exc:  # noqa: BLE001 - handed to the request, which answers it as JSON
                loop.call_soon_threadsafe(queue.put_nowait, (None, exc))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, (done, None))

        threading.Thread(target=self.gate.run, args=(work,), name="rag-serve-answer", daemon=True).start()
        while True:
            item, exc = await queue.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item

    async def answer(self, items: Callable[[], Iterator[Any]]) -> Answer:
        """The verified Answer that ``items`` ends with."""
        result = None
        async for item in self.produce(items):
            result = item
        assert isinstance(result, Answer)
        return result

    async def answer_or_error(self, items: Callable[[], Iterator[Any]]) -> Answer | Response:
        """The verified Answer, or the one-line JSON error (429 when the line is full) that answering ended in."""
        try:
            return await self.answer(items)
        except Exception as exc:  # noqa: BLE001 - every failure is one line of JSON
            status, msg, kind = self.failure(exc)
            return self.busy() if status == 429 else self.error(status, msg, kind)

    def failure(self, exc: BaseException) -> tuple[int, str, str]:
        """Status, message and type for an exception met while answering."""
        if isinstance(exc, Busy):
            return 429, "busy: try again in a moment", "rate_limit_error"
        if isinstance(exc, RagError):
            msg = str(exc)
            return (429, msg, "rate_limit_error") if msg.startswith("busy:") else (400, msg, "invalid_request_error")
        log.error("answering failed", exc_info=exc)
        return 500, f"the answer failed on the server ({type(exc).__name__}); the server log has the details", "server_error"


def sources_block(answer: Answer) -> str:
    """The citations as text a chat window shows under the answer."""
    lines = [SOURCES_HEADING]
    for c in answer.citations:
        meta = ", ".join(x for x in (c.outlet, c.date) if x) or "undated"
        title = f": {c.title}" if c.title else ""
        lines.append(f"[{c.n}] {c.source_file}{title} ({meta}), chars {c.start}-{c.end}")
        lines.append(f"    “{c.quote}”")
    return "\n".join(lines)


def chat_content(answer: Answer) -> str:
    """The assistant message: the answer with its [n] markers, why it abstained, then the sources."""
    parts = [answer.text]
    if answer.abstained and answer.abstain_reason:
        parts[0] += f"\nWhy: {answer.abstain_reason}."
    if answer.citations:
        parts.append(sources_block(answer))
    return "\n\n".join(parts)


def history_of(messages: list[ChatMessage]) -> tuple[list[tuple[str, str]], str]:
    """Earlier (question, answer) turns and the last user message, the question."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise RagError("the messages hold no user message: the last user message is the question")
    history: list[tuple[str, str]] = []
    question: str | None = None
    for m in messages[:last]:
        if m.role == "user":
            question = m.text()
        elif m.role == "assistant" and question is not None:
            # the sources block this server appended is not part of what was said
            history.append((question, m.text().split(f"\n\n{SOURCES_HEADING}\n", 1)[0]))
            question = None
    return history, messages[last].text()


def sse(data: str, event: str | None = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


def create_app(rag: RAG) -> FastAPI:
    """The HTTP app over one opened RAG."""
    srv = Server(rag)
    app = FastAPI(
        title="newsrag",
        version="1",
        description="Answers from a news corpus; every claim cites its exact passage (file, quote, character span).",
    )
    app.state.server = srv

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # GET and POST of one path are two routes: Allow names both
            path = request.url.path
            methods = {m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(path) for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return srv.error(exc.status_code, str(exc.detail), kind, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "the request"
        return srv.error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(RagError)  # bad input found in a route: handled here, not logged as a crash
    async def _refused(request: Request, exc: RagError) -> Response:
        status, msg, kind = srv.failure(exc)
        return srv.busy() if status == 429 else srv.error(status, msg, kind)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        status, msg, kind = srv.failure(exc)
        return srv.error(status, msg, kind)

    @app.get("/healthz", response_model=Health)
    def healthz() -> Response:
        """Whether the server is up, how many articles it answers from, and how many answers are in line."""
        return srv.json({"status": "ok", "articles": len(rag.index.docs), "backend": srv.settings.llm, "waiting": srv.gate.held})

    @app.get("/v1/models", response_model=ModelList)
    def models() -> Response:
        """The one model this server answers as."""
        return srv.json({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "newsrag"}]})

    @app.get("/v1/articles", response_model=ArticleList, responses={400: {"model": ErrorBody}, 422: {"model": ErrorBody}})
    def articles(
        sort: Literal["date", "outlet", "title"] = "date",
        since: str | None = Query(None, pattern=PERIOD),
        until: str | None = Query(None, pattern=PERIOD),
        outlet: str | None = Query(None, max_length=200, description="only outlets whose name contains this (any case)"),
    ) -> Response:
        """The indexed articles, sorted and filtered as ``rag list`` does."""
        docs, undated = rag.articles(sort, since, until, outlet)
        # a write published between the two reads leaves a listed article out of the newer index: no chunks now
        counts = rag.index.chunk_counts
        listed = [
            {"id": d.id, "title": d.title, "outlet": d.outlet, "author": d.author, "date": d.date, "url": d.url}
            | {"chunks": counts.get(d.id, 0), "duplicate_of": d.duplicate_of, "inherited": d.inherited}
            for d in docs
        ]
        return srv.json({"articles": listed, "undated_left_out": undated})

    def writer(authorization: str | None = Header(None, description="Bearer <RAG_SERVE_TOKEN>")) -> None:
        """Let a write through only with the configured token; with none configured, writes are off."""
        token = srv.settings.serve_token
        if not token:
            raise StarletteHTTPException(403, "writing articles over HTTP is off: the server sets RAG_SERVE_TOKEN to allow it")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise StarletteHTTPException(401, "a write needs the header Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})

    writes = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 413, 422)}

    @app.post("/v1/articles", response_model=UploadReport, responses=writes, dependencies=[Depends(writer)])
    def upload(files: list[UploadFile]) -> Response:
        """Add article files (.txt, .md, .html), checked as the UI checks uploads; a name in use gets a number."""
        with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
            paths = []
            for i, f in enumerate(files):
                target = Path(tmp, str(i), safe_name(f.filename or "upload.txt"))  # the client's name never picks a path
                target.parent.mkdir()
                with target.open("wb") as out:
                    shutil.copyfileobj(f.file, out)
                paths.append(target)
            lines = Uploads(rag).add(paths)
        body = {"lines": [{"kind": kind, "text": text} for kind, text in lines]}
        return srv.json(body, 200 if any(kind == "ok" for kind, _ in lines) else 400)

    @app.delete("/v1/articles/{article_id}", response_model=UploadReport, responses=writes, dependencies=[Depends(writer)])
    def delete(article_id: str) -> Response:
        """Drop an article from the index by its id (as ``rag index remove``); its file stays where it is."""
        rag.refresh()
        if article_id not in rag.index.docs:
            raise StarletteHTTPException(404, f"no indexed article {article_id!r}: GET /v1/articles lists them")
        report = index_writer.update(rag.index.root, srv.settings, remove=[article_id])
        rag.refresh()
        return srv.json({"lines": [{"kind": "ok", "text": f"removed {article_id}: {report.summary()}"}]})

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            **ERRORS,
            200: {"content": SSE_CONTENT, "description": "a chat completion, or with stream: its chunks as server-sent events"},
        },
    )
    async def chat(req: ChatRequest) -> Response:
        """OpenAI-compatible chat: the last user message is the question; the citations come as a sources block and as ``citations``."""
        overrides = srv.overrides(req)
        history, question = history_of(req.messages)
        question = rag.check_question(question)  # an over-long or empty question is refused before it waits
        state: dict[str, str] = {}

        def items() -> Iterator[str | Answer]:
            rag.refresh()
            state["standalone"] = standalone = rag.rewrite(history, question, **overrides) if history else question
            srv.fresh(overrides)
            yield from rag.stream(standalone, as_of=req.as_of, since=req.since, until=req.until, **overrides)

        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def extra(answer: Answer) -> dict:
            return {
                "citations": [c.to_dict() for c in answer.citations],
                "abstained": answer.abstained,
                "standalone_question": state.get("standalone", question),
            }

        if not req.stream:
            answer = await srv.answer_or_error(items)
            if isinstance(answer, Response):
                return answer
            message = {"role": "assistant", "content": chat_content(answer)}
            body = {"id": cid, "object": "chat.completion", "created": created, "model": MODEL_ID}
            body["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
            body["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            return srv.json({**body, **extra(answer)})
        if srv.gate.held >= srv.gate.capacity:  # refused as a status, not as an event of a stream already begun
            return srv.busy()

        def chunk(delta: dict, finish: str | None = None, **more: object) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID}
            return sse(srv.dumps({**body, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **more}))

        async def events() -> AsyncIterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            try:
                async for item in srv.produce(items):
                    if isinstance(item, str):  # the draft, before verification: beside the content, not in it
                        yield chunk({}, draft=item)
                    else:
                        yield chunk({"content": chat_content(item)})
                        yield chunk({}, "stop", **extra(item))
            except Exception as exc:  # noqa: BLE001 - an error event, which OpenAI clients raise as APIError
                status, msg, kind = srv.failure(exc)
                yield sse(srv.dumps({"error": {"message": " ".join(msg.split()), "type": kind, "code": str(status)}}))
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post(
        "/v1/ask",
        response_model=AskAnswer,
        responses={
            **ERRORS,
            200: {
                "content": SSE_CONTENT,
                "description": "the answer as `rag ask --json` prints it, or with stream: "
                "`token` events of the draft, then one `answer` event",
            },
        },
    )
    async def ask(req: AskRequest) -> Response:
        """A question with date filters: the JSON of ``rag ask --json``; with ``stream``, draft tokens then the verified answer."""
        overrides = srv.overrides(req)
        question = rag.check_question(req.question)

        def items() -> Iterator[str | Answer]:
            rag.refresh()
            srv.fresh(overrides)
            yield from rag.stream(question, as_of=req.as_of, since=req.since, until=req.until, **overrides)

        if not req.stream:
            answer = await srv.answer_or_error(items)
            return answer if isinstance(answer, Response) else srv.json(answer.to_dict())
        if srv.gate.held >= srv.gate.capacity:
            return srv.busy()

        async def events() -> AsyncIterator[str]:
            try:
                async for item in srv.produce(items):
                    if isinstance(item, str):
                        yield sse(srv.dumps({"text": item}), "token")
                    else:
                        yield sse(srv.dumps(item.to_dict()), "answer")
            except Exception as exc:  # noqa: BLE001 - the stream has begun: the error is its last event
                status, msg, kind = srv.failure(exc)
                yield sse(srv.dumps({"error": {"message": " ".join(msg.split()), "type": kind, "code": str(status)}}), "error")

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return BodyLimit(app, srv)


class BodyLimit:
    """ASGI middleware: a request body past ``serve_max_body_bytes`` is refused with 413 before it is read whole."""

    def __init__(self, app: FastAPI, srv: Server):
        self.app, self.srv, self.limit = app, srv, srv.settings.serve_max_body_bytes
        self.state = app.state  # tests and callers reach the Server as app.state.server
        self.openapi = app.openapi

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = self._named(send)
        if not self._may_read(scope):
            return await self._reply(send, 401, "this server needs the header Authorization: Bearer <RAG_SERVE_READ_TOKEN>", [(b"www-authenticate", b"Bearer")])
        limit = self.limit
        if scope.get("path") == "/v1/articles":  # uploads: a few files as large as the UI takes, checked each by rag.ingest.uploads
            limit = max(limit, 4 * self.srv.settings.max_file_bytes)
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            return await self._refuse(send, limit)
        seen, started = 0, False

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # a chunked body that outgrows the limit
                    raise _TooLarge
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(send, limit)

    async def _refuse(self, send, limit: int) -> None:
        await self._reply(send, 413, f"the request body is larger than {limit:,} bytes")

    async def _reply(self, send, status: int, message: str, more: list[tuple[bytes, bytes]] = ()) -> None:
        response = self.srv.error(status, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(response.body)).encode()), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": [*headers, *more]})
        await send({"type": "http.response.body", "body": response.body})

    def _named(self, send):
        """``send`` with this run's instance header on the response."""
        name = (forward.INSTANCE_HEADER.encode(), self.srv.instance.encode())

        async def named(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), name]}
            await send(message)

        return named

    def _may_read(self, scope) -> bool:
        """With a read token set, every path but the health check and the spec needs it (or the write token)."""
        token = self.srv.settings.serve_read_token
        if not token or scope.get("path") in _OPEN_PATHS:
            return True
        given = dict(scope.get("headers") or []).get(b"authorization", b"").removeprefix(b"Bearer ").strip()
        allowed = [t.encode() for t in (token, self.srv.settings.serve_token) if t]
        return any(hmac.compare_digest(given, t) for t in allowed)


_OPEN_PATHS = {"/healthz", "/openapi.json", "/docs", "/redoc"}  # nothing read from the index: open even with a read token


class _TooLarge(Exception):
    pass


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Open the index named by ``settings`` and serve the HTTP API until interrupted (``rag serve``)."""
    import socket

    import uvicorn

    try:  # before the index and model load, so a taken port fails in a second; kept, so no one takes it meanwhile
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise RagError(
            f"cannot serve on {host}:{port} (the port is taken or the address is not this machine's): choose another with --port/--host"
        ) from exc
    with sock:
        port = sock.getsockname()[1]  # --port 0: the one the system chose
        rag = RAG.open(settings.index_dir, settings)
        threading.Thread(target=_warm, args=(rag,), name="rag-warm", daemon=True).start()
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {host}: anyone who can reach this machine can ask questions", flush=True)
        print(f"newsrag API at http://{host}:{port}/v1 (OpenAPI at /openapi.json; Ctrl+C to stop)", flush=True)
        app = create_app(rag)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", server_header=False))
        # written once the socket listens (a connection waits in its backlog until uvicorn accepts it)
        with forward.advertise(settings, app.state.server.instance, host, port, settings.serve_read_token):
            server.run(sockets=[sock])


def _warm(rag: RAG) -> None:
    try:
        rag.warm()
    except Exception as exc:  # noqa: BLE001 - the first question reports it properly
        log.warning("could not load the model in advance: %s", exc)
