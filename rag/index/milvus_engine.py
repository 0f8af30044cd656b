"""Milvus's engine for the store: where it is (an embedded .db file or a cluster), the packaged server binary started and stopped, one client per place.

``python -m rag.index.milvus_engine FILE [--address HOST:PORT]`` serves one embedded engine to several processes."""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..settings import Settings
from ..types import RagError
from .mirror import collection_name

if TYPE_CHECKING:
    from pymilvus import MilvusClient

LOCAL_FOLDER = "milvus"  # under the index folder, beside the generations
LOCAL_FILE = "milvus.db"
LOCAL_COLLECTION = "chunks"
LOCK_WAIT_S = 3.0  # how long an engine whose process just died may take to let go of its file
HELP_URL = "give a local .db file for the embedded engine, or a cluster's address such as http://localhost:19530"


@dataclass(frozen=True)
class Where:
    """Where the store lives: the embedded engine's file, or a cluster's URL."""

    file: Path | None = None
    url: str = ""

    def __str__(self) -> str:
        return str(self.file) if self.file else self.url


def where(index_root: Path, url: str) -> Where:
    """``RAG_STORE_URL`` read: empty is the embedded file under the index; http(s) a cluster; else a RagError naming it."""
    shown = f"RAG_STORE_URL={url!r}"
    if not url:
        return Where(file=index_root / LOCAL_FOLDER / LOCAL_FILE)
    if url != url.strip() or any(c.isspace() for c in url):
        raise RagError(f"{shown} holds spaces: {HELP_URL}")
    if "://" not in url:
        path = Path(url).expanduser()
        if path.suffix != ".db" or not re.fullmatch(r"[A-Za-z0-9._-]{1,36}", path.name):
            raise RagError(
                f"{shown} is neither a server address nor a .db file name of at most 36 letters, digits, '.', '_' or '-': {HELP_URL}"
            )
        return Where(file=path)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks the port (ValueError past 65535 or not a number)
    except ValueError as exc:
        raise RagError(f"{shown} is not a URL ({exc}): {HELP_URL}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RagError(f"{shown} is not an http(s) server address: {HELP_URL}")
    return Where(url=url)


def milvus_collection(root: Path) -> str:
    """A cluster's collection for the index at ``root``: Milvus names take letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", collection_name(root))


# ---------------------------------------------------------------- the embedded engine
def engine_binary() -> Path:
    """The Milvus server binary inside the installed milvus-lite wheel; a RagError when it is missing."""
    spec = importlib.util.find_spec("milvus_lite")
    if spec is None or not spec.submodule_search_locations:
        raise RagError("RAG_STORE=milvus needs the milvus extra: pip install 'newsrag[milvus]' (or unset RAG_STORE)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "lib" / "milvus"
    if not binary.is_file():
        raise RagError(
            f"the installed milvus-lite has no server binary at {binary}: install milvus-lite==2.4.12 (pip install 'newsrag[milvus]')"
        )
    return binary


def _lock(f) -> None:
    """Lock the engine's file, waiting a moment for an engine whose process just ended to let go of it."""
    # held while the engine runs: a second engine on the file would corrupt it. The binary waits on this
    # lock, so it exits when this process dies, however it dies, and holds it briefly then
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Engine:
    """Milvus's server binary started on a database file, as a child process; :meth:`stop` ends it."""

    # started directly rather than through milvus-lite's Python wrapper, which imports pkg_resources
    # (gone from current setuptools) and reports a failed start only as None

    def __init__(self, file: Path, address: str = "", timeout_s: float = 30.0) -> None:
        """Start the engine on ``file``: on a private socket, or listening at ``address`` (``host:port``) for other processes."""
        binary = engine_binary()
        if address and not re.fullmatch(r"[A-Za-z0-9.-]+:\d{1,5}", address):
            raise RagError(f"the address {address!r} is not HOST:PORT, such as 127.0.0.1:19530")
        self.file = file.expanduser().resolve()
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RagError(f"cannot make the folder of the Milvus store {self.file} ({exc.strerror})") from exc
        self._lock_path = self.file.parent / f".{self.file.name}.lock"
        self._lock = open(self._lock_path, "a")
        try:
            _lock(self._lock)
        except BlockingIOError as exc:
            self._lock.close()
            raise RagError(
                f"the embedded Milvus store {self.file} is open in another process; close it, "
                "or serve one engine to all of them (python -m rag.index.milvus_engine FILE --address HOST:PORT) and set RAG_STORE_URL"
            ) from exc
        self._dir = tempfile.mkdtemp(prefix="newsrag-milvus-")  # a socket path must stay under ~100 characters
        self.uri = f"http://{address}" if address else f"unix:{self._dir}/engine.sock"
        args = [str(binary), str(self.file), address or self.uri, "ERROR", str(self._lock_path)]
        self._log = open(Path(self._dir) / "engine.log", "w+b")
        try:
            self.process = subprocess.Popen(
                args, env={"LD_LIBRARY_PATH": str(binary.parent)}, cwd=str(self.file.parent), stdout=self._log, stderr=self._log
            )
        except OSError as exc:
            self.stop()
            raise RagError(f"cannot start the Milvus engine {binary} ({exc.strerror or exc})") from exc
        self._wait_ready(address, timeout_s)

    def _wait_ready(self, address: str, timeout_s: float) -> None:
        import socket

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise RagError(f"the Milvus engine on {self.file} stopped as it started (exit {self.process.returncode}): {tail}")
            try:
                if address:
                    host, port = address.rsplit(":", 1)
                    socket.create_connection((host, int(port)), timeout=0.2).close()
                else:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(self.uri[len("unix:") :])
                return
            except OSError:
                time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RagError(f"the Milvus engine on {self.file} did not start within {timeout_s:g} s (RAG_STORE_TIMEOUT_S): {tail}")

    def log_tail(self) -> str:
        """The engine's last log line, or a note that it wrote none."""
        try:
            self._log.seek(0)
            lines = [ln for ln in self._log.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            lines = []
        return lines[-1].strip() if lines else "it wrote nothing"

    def stop(self) -> None:
        """End the engine (it flushes what was written) and release its file."""
        p = getattr(self, "process", None)
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._lock is not None and not self._lock.closed:
            fcntl.lockf(self._lock, fcntl.LOCK_UN)
            self._lock.close()
        if getattr(self, "_log", None) is not None:
            self._log.close()
        if hasattr(self, "_dir"):
            shutil.rmtree(self._dir, ignore_errors=True)


_OPEN: dict[str, tuple[MilvusClient, Engine | None]] = {}
_OPEN_LOCK = threading.Lock()


def connect(place: Where, settings: Settings) -> MilvusClient:
    """One client per file or URL in a process (an embedded file takes one engine at a time); the engine started if embedded."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise RagError("RAG_STORE=milvus needs the milvus extra: pip install 'newsrag[milvus]' (or unset RAG_STORE)") from exc
    key = str(place.file.expanduser().resolve()) if place.file else place.url
    with _OPEN_LOCK:
        if key in _OPEN:
            return _OPEN[key][0]
        engine = Engine(place.file, timeout_s=settings.store_timeout_s) if place.file else None
        try:
            client = MilvusClient(uri=engine.uri if engine else place.url, token=settings.store_token, timeout=settings.store_timeout_s)
        except Exception as exc:  # refused, unreachable, a bad token: pymilvus's own exception types
            if engine:
                engine.stop()
            raise RagError(f"cannot reach the Milvus store at {place}: {engine_error(exc)}") from exc
        _OPEN[key] = (client, engine)
        return client


def engine_error(exc: Exception) -> str:
    """pymilvus's message without its wrapping (``<MilvusException: (code=2, message=…)>``)."""
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(str(msg).split())[:300]


@atexit.register
def close_all() -> None:
    """Close every client and stop every engine this process started."""
    with _OPEN_LOCK:
        for client, engine in _OPEN.values():
            try:
                client.close()
            finally:
                if engine:
                    engine.stop()
        _OPEN.clear()


def main(argv: list[str] | None = None) -> int:
    """``python -m rag.index.milvus_engine FILE [--address HOST:PORT]``: serve the embedded engine to other processes until stopped."""
    import argparse
    import signal
    import sys

    p = argparse.ArgumentParser(prog="python -m rag.index.milvus_engine", description=main.__doc__)
    p.add_argument("file", type=Path, help="the engine's .db file (created if missing)")
    p.add_argument("--address", default="127.0.0.1:19530", help="where it listens (default %(default)s)")
    args = p.parse_args(argv)
    try:
        engine = Engine(args.file, address=args.address)
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped as by Ctrl-C: the engine is ended, not orphaned
    print(f"serving {engine.file} at {engine.uri} (RAG_STORE=milvus RAG_STORE_URL={engine.uri})", flush=True)
    try:
        return engine.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        engine.stop()


if __name__ == "__main__":
    raise SystemExit(main())
