"""Adding article files to the corpus folder and the index: the UI's upload box and ``RAG.add_files``.

Each file is checked (type, size, encoding, article text), saved whole under a name that stays
inside the corpus folder and never replaces an article, then the saved files are indexed
incrementally. Every outcome is one line for the person who added the files.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from ..files import published
from ..index import layout, writer
from ..types import RagError
from .corpus import SUFFIXES, load_document

if TYPE_CHECKING:
    from ..index.reader import Index
    from ..settings import Settings

log = logging.getLogger("rag.ingest.uploads")

# One upload at a time in this process: choosing a free name and saving under it must not interleave.
_LOCK = threading.Lock()

_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class Opened(Protocol):
    """What adding files needs of an opened :class:`rag.RAG` (a protocol, as rag.api imports this module)."""

    index: Index
    settings: Settings

    def refresh(self) -> bool: ...


class UploadLine(NamedTuple):
    """One outcome of an upload, for the person who made it."""

    kind: Literal["ok", "error", "info"]
    text: str


def safe_name(name: str) -> str:
    """A file name that cannot leave its folder: base name only, ASCII letters, digits, ``._-``."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"\.{2,}", ".", _SAFE_CHARS.sub("_", base)).lstrip("._-")
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = stem.strip("._-")[:100] or "article"
    return f"{stem}.{ext.lower()}" if ext else stem


def default_folder(idx: Index) -> Path:
    """Where added files go when no folder is named: the first folder the index was built from."""
    sources = [Path(s) for s in layout.source_paths(idx.manifest)]
    for s in sources:
        if s.is_dir():
            return s
    if sources:
        return sources[0].parent
    return Path(idx.root) / "articles"


class Uploads:
    """Adds article files to a corpus folder (``folder``, else ``settings.corpus_dir``, else
    :func:`default_folder`) and to the opened index."""

    def __init__(self, rag: Opened, folder: str | Path | None = None):
        self.rag = rag
        self.folder = Path(folder or rag.settings.corpus_dir or default_folder(rag.index)).resolve()

    def _check(self, upload: Path, name: str) -> None:
        settings = self.rag.settings
        suffix = Path(name).suffix.lower()
        if suffix not in SUFFIXES:
            raise RagError(f"{name}: unsupported file type {suffix or '(none)'}; upload .txt, .md or .html articles")
        size = upload.stat().st_size
        if size > settings.max_file_bytes:
            raise RagError(f"{name}: file is {size:,} bytes, over the {settings.max_file_bytes:,}-byte limit")
        try:
            load_document(upload, settings.max_file_bytes)  # binary, not UTF-8/UTF-16, empty, no article text
        except RagError as exc:
            msg = str(exc)
            raise RagError(name + msg[len(upload.name) :] if msg.startswith(upload.name + ":") else f"{name}: {msg}") from exc

    def _target(self, upload: Path, name: str) -> tuple[Path, bool]:
        """Where an upload is saved, and whether that file already holds the same bytes.

        An upload never replaces an article: anyone who can open the UI may upload, and replacing
        would let one visitor rewrite what another added. A name in use gets a number instead
        (``report-2.txt``), as a browser does with a second download of the same name.
        """
        data = upload.read_bytes()
        stem, suffix = Path(name).stem, Path(name).suffix
        for candidate in itertools.chain([name], (f"{stem}-{n}{suffix}" for n in itertools.count(2))):
            target = self.folder / candidate
            if target.exists():
                if target.read_bytes() == data:
                    return target, True
            elif candidate not in self.rag.index.docs:  # names an indexed article elsewhere: taken too
                return target, False
        raise AssertionError("an endless sequence of names ended")

    def _save(self, uploads: Iterable[str | Path], lines: list[UploadLine]) -> list[Path]:
        """Check and save each file into the folder; the files saved (those refused or unchanged are a line each)."""
        saved: list[Path] = []
        for up in uploads:
            src = Path(up)
            name = safe_name(src.name)
            try:
                self._check(src, name)
                target, same = self._target(src, name)
                if target.resolve().parent != self.folder:  # cannot happen after safe_name; checked anyway
                    raise RagError(f"{name}: refused, the name leaves the corpus folder")
                if same:
                    lines.append(UploadLine("info", f"{target.name}: already in the corpus, unchanged"))
                    continue
                if target.name != name:
                    lines.append(UploadLine("info", f"{name}: an article of this name is already in the corpus; saved as {target.name}"))
                with published(target) as tmp:  # the indexer never reads half a file
                    shutil.copyfile(src, tmp)
                saved.append(target)
            except RagError as exc:
                lines.append(UploadLine("error", str(exc)))
        return saved

    def add(self, uploads: Iterable[str | Path]) -> list[UploadLine]:
        """Check, save and index the files; one line per outcome, and the index update last."""
        lines: list[UploadLine] = []
        with _LOCK:
            self.rag.refresh()
            self.folder.mkdir(parents=True, exist_ok=True)
            saved = self._save(uploads, lines)
            if not saved:
                return lines
            try:
                report = writer.add(self.rag.index.root, saved, self.rag.settings)
            except Exception as exc:
                for target in saved:  # keep the folder as the index describes it
                    target.unlink(missing_ok=True)
                log.exception("indexing the upload failed")
                lines.append(UploadLine("error", f"indexing failed: {exc}"))
                return lines
            self.rag.refresh()
            names = {t.name for t in saved}
            lines.extend(UploadLine("error", e) for e in report.errors)
            counts = self.rag.index.chunk_counts
            for verb, doc_ids in (("added", report.added), ("updated", report.updated)):
                for doc_id in doc_ids:
                    if doc_id in names:
                        n = counts.get(doc_id, 0)
                        lines.append(UploadLine("ok", f"{doc_id}: {verb} ({n} chunk{'' if n == 1 else 's'})"))
            lines.append(UploadLine("info", f"index: {report.summary()}"))
        return lines
