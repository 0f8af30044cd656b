"""Build, persist, open and incrementally update the index (FAISS vectors + BM25 + chunk store).

Layout of an index folder::

    index/
      CURRENT          name of the live generation, replaced atomically
      gen-000007/      manifest.json, documents.json, chunks.jsonl, raw.jsonl, vectors.faiss, dense_ids.npy, bm25/
      sources.json     the files and folders of the last build that indexed something (a record file's with its
                       field map), and the feeds followed; replaced atomically
      fetched/         pages fetched from feeds and urls (rag.feeds), indexed like any folder
      .lock            held by the one writer

A write builds a complete new generation beside the live one and then swaps ``CURRENT``
with ``os.replace``: a reader, or a crash at any point, sees the old index or the new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import embedding, records
from .chunking import chunk_document
from .corpus import LoadError, LoadResult, iter_article_files, load_files, read_text
from .dedup import mark_duplicates
from .files import published
from .settings import Settings
from .text import bm25_tokenize
from .types import Chunk, Document, RagError, Sentence

if TYPE_CHECKING:  # imported where used: both load slowly, and many commands never open an index
    import bm25s
    import faiss

FORMAT_VERSION = 4  # 4: Document.inherited (metadata filled in from another copy), .record and .html (records of a file)
SOURCES_FILE = "sources.json"  # outside the generations: a damaged CURRENT or manifest cannot take it along
FETCHED_DIR = "fetched"  # pages rag.feeds fetched, stored as .html files with sidecars
_GEN_NAME = re.compile(r"gen-\d{6,}")


def embed_text(chunk: Chunk, doc: Document) -> str:
    """What is embedded and BM25-indexed for a chunk: the article's title and date give it context."""
    head = " — ".join(x for x in (doc.title, doc.date) if x)
    return f"{head}\n{chunk.text}" if head else chunk.text


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[LoadError] = field(default_factory=list)  # the files (or records) not indexed, one line each
    embedded_chunks: int = 0
    n_chunks: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
            f"{len(self.unchanged)} unchanged; {self.n_chunks} chunks ({self.embedded_chunks} embedded) "
            f"in {self.seconds:.1f}s"
        )


# ---------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class ChunkerSetup:
    """How articles were cut into passages; a change re-chunks and re-embeds everything."""

    kind: str
    chunk_chars: int
    overlap_sentences: int


@dataclass(frozen=True)
class ManifestDocument:
    """What a manifest records of one indexed article."""

    content_hash: str | None
    path: str | None
    n_chunks: int


@dataclass(frozen=True)
class Manifest:
    """A generation's ``manifest.json``: the format, how it was embedded and chunked, its sources and articles.

    Read leniently (a field that is missing or of the wrong type reads as None or empty) so that a
    damaged or older index can still name its sources and be rebuilt; :meth:`Index.open` checks
    the fields it relies on.
    """

    format_version: int | None = None
    embedder: str | None = None
    precision: str | None = None
    dim: int | None = None
    chunker: ChunkerSetup | None = None
    sources: list[str] = field(default_factory=list)
    source_fields: dict[str, dict[str, str]] = field(default_factory=dict)  # the field map a source was read with
    n_chunks: int | None = None
    dense_chunks_per_article: int | None = None
    n_dense: int | None = None
    documents: dict[str, ManifestDocument] = field(default_factory=dict)
    built_at: str | None = None

    @classmethod
    def read(cls, gen: Path) -> Manifest:
        """A generation's manifest; an empty one when the file is missing or unreadable."""
        try:
            return cls.from_json(json.loads((gen / "manifest.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return cls()

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        """The manifest of parsed ``manifest.json`` content; ValueError when it is not a JSON object."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        sources, source_fields = _parse_sources(data.get("sources")) or ([], {})
        docs = data.get("documents")
        return cls(
            format_version=_typed(data.get("format_version"), int),
            embedder=_typed(data.get("embedder"), str),
            precision=_typed(data.get("precision"), str),
            dim=_typed(data.get("dim"), int),
            chunker=_chunker(data.get("chunker")),
            sources=sources,
            source_fields=source_fields,
            n_chunks=_typed(data.get("n_chunks"), int),
            dense_chunks_per_article=_typed(data.get("dense_chunks_per_article"), int),
            n_dense=_typed(data.get("n_dense"), int),
            documents={k: _manifest_document(v) for k, v in docs.items()} if isinstance(docs, dict) else {},
            built_at=_typed(data.get("built_at"), str),
        )

    def to_json(self) -> str:
        """The file's text; its keys and their order are the index format (FORMAT_VERSION)."""
        data = {
            "format_version": self.format_version,
            "embedder": self.embedder,
            "precision": self.precision,
            "dim": self.dim,
            "chunker": asdict(self.chunker) if self.chunker else None,
            "sources": _source_entries(self.sources, self.source_fields),
            "n_chunks": self.n_chunks,
            "dense_chunks_per_article": self.dense_chunks_per_article,
            "n_dense": self.n_dense,
            "documents": {k: asdict(v) for k, v in self.documents.items()},
            "built_at": self.built_at,
        }
        return json.dumps(data, indent=1, ensure_ascii=False)

    def setup(self) -> tuple[str | None, str | None, int | None, ChunkerSetup | None]:
        """The embedder, its precision, the vector size and the chunker: what the stored vectors depend on."""
        return self.embedder, self.precision, self.dim, self.chunker


def _setup(settings: Settings) -> tuple[str, str, int, ChunkerSetup]:
    """:meth:`Manifest.setup` for a build with these settings."""
    chunker = ChunkerSetup("sentences", settings.chunk_chars, settings.chunk_overlap_sentences)
    return embedding.EMBEDDER_ID, embedding.precision(settings.embed_precision), embedding.EMBEDDER_DIM, chunker


def _typed(value: object, kind: type) -> Any:
    # bool is an int to Python, never a count or a version here
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _chunker(data: object) -> ChunkerSetup | None:
    if not isinstance(data, dict):
        return None
    try:
        return ChunkerSetup(**data)
    except TypeError:  # other keys: another chunker, so everything is chunked again
        return None


def _manifest_document(data: object) -> ManifestDocument:
    data = data if isinstance(data, dict) else {}
    return ManifestDocument(_typed(data.get("content_hash"), str), _typed(data.get("path"), str), _typed(data.get("n_chunks"), int) or 0)


class Index:
    """An opened index generation: documents, chunks, their vectors and the BM25 model."""

    def __init__(
        self,
        root: Path,
        gen: Path,
        manifest: Manifest,
        docs: dict[str, Document],
        chunks: list[Chunk],
        vectors: faiss.IndexFlatIP,
        dense_ids: np.ndarray,
        bm25: bm25s.BM25 | None,
        raw: dict[str, str],
    ) -> None:
        self.root = root
        self.gen = gen
        self.manifest = manifest
        self.docs = docs
        self.chunks = chunks
        self.vectors = vectors  # faiss.IndexFlatIP, row r = chunks[dense_ids[r]]
        self.dense_ids = dense_ids
        self.row_of = {int(c): r for r, c in enumerate(dense_ids)}  # chunk index -> vector row
        self.bm25 = bm25
        self._raw = raw  # loaded at open: a reader never depends on files a later writer removes

    # ------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | Path) -> Index:
        """Open the live generation of the index at ``root``; raises RagError if missing or corrupt."""
        import bm25s
        import faiss

        root = Path(root)
        gen = root / current_name(root)
        fix = _rebuild_hint(root)
        part = gen / "manifest.json"  # the file being read, named when it turns out damaged
        try:
            manifest = Manifest.from_json(json.loads(part.read_text(encoding="utf-8")))
            if manifest.format_version != FORMAT_VERSION:
                raise RagError(f"index at {root}/ has format {manifest.format_version}, this version reads {FORMAT_VERSION}: {fix}")
            part = gen / "documents.json"
            docs = {
                d["id"]: Document(**{**d, "segments": [tuple(s) for s in d["segments"]]})
                for d in json.loads(part.read_text(encoding="utf-8"))
            }
            part = gen / "chunks.jsonl"
            chunks = []
            with open(part, encoding="utf-8") as f:
                for line in f:
                    c = json.loads(line)
                    c["sentences"] = [Sentence(**s) for s in c["sentences"]]
                    chunks.append(Chunk(**c))
            part = gen / "vectors.faiss"
            vectors = faiss.read_index(str(part))
            part = gen / "dense_ids.npy"
            dense_ids = np.load(part)
            part = gen / "raw.jsonl"
            raw: dict[str, str] = {}
            with open(part, encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    raw[d["id"]] = d["raw"]
            part = gen / "bm25"
            bm25 = bm25s.BM25.load(str(part)) if chunks else None
        except RagError:
            raise
        except Exception as exc:  # any unreadable or truncated file
            raise RagError(f"index file {part} is corrupt ({type(exc).__name__}: {exc}); {fix}") from exc
        if (
            vectors.ntotal != len(dense_ids)
            or manifest.n_chunks != len(chunks)
            or (len(dense_ids) and int(dense_ids.max()) >= len(chunks))
        ):
            raise RagError(f"index at {gen}/ is corrupt (vectors.faiss, dense_ids.npy and chunks.jsonl disagree); {fix}")
        if set(raw) != set(docs):
            raise RagError(f"index at {gen}/ is corrupt (raw.jsonl lacks article texts); {fix}")
        return cls(root, gen, manifest, docs, chunks, vectors, dense_ids, bm25, raw)

    def raw(self, doc_id: str) -> str:
        """The article's file text as it was indexed; citation offsets point into it.

        Kept inside the index, so quotes stay exact even if the file is edited or deleted
        before the next `rag index`.
        """
        return self._raw[doc_id]

    @cached_property
    def chunk_counts(self) -> dict[str, int]:
        """The number of chunks of each indexed article (a generation never changes, so counted once)."""
        counts = dict.fromkeys(self.docs, 0)
        for c in self.chunks:
            counts[c.doc_id] += 1
        return counts

    def vector_matrix(self) -> np.ndarray:
        """Row r is the vector of chunk ``dense_ids[r]``."""
        n = self.vectors.ntotal
        return self.vectors.reconstruct_n(0, n) if n else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)


# ---------------------------------------------------------------- reading the layout
def _rebuild_hint(root: Path) -> str:
    return f"rebuild it with `rag index --rebuild --index {root}`"


def _not_a_folder(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise RagError(f"{root} is a file, not an index folder: give --index a folder (it is created if missing)")


def current_name(root: Path) -> str:
    """The live generation's name from ``CURRENT``; raises RagError naming the file when it is missing or damaged."""
    _not_a_folder(root)
    cur = root / "CURRENT"
    if not cur.is_file():
        if any(root.glob("gen-*")):
            raise RagError(f"{cur} is missing; {_rebuild_hint(root)}")
        raise RagError(f"no index at {root}/: build one with `rag index seeds/`")
    try:
        name = cur.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"{cur} is unreadable ({exc}); {_rebuild_hint(root)}") from exc
    # a name that is not a generation here (garbage, or a path such as ../x) is never followed
    if not _GEN_NAME.fullmatch(name) or not (root / name).is_dir():
        raise RagError(f"{cur} does not name a generation of this index ({name[:40]!r}); {_rebuild_hint(root)}")
    return name


def _current_or_none(root: Path) -> str | None:
    try:
        return current_name(root)
    except RagError:
        return None


def _recorded_manifest(root: Path) -> Manifest:
    """The live manifest, read leniently so a damaged or older index can still be rebuilt."""
    name = _current_or_none(root)
    return Manifest.read(root / name) if name else Manifest()


def _generations(root: Path) -> list[Path]:
    """The index's generation folders, newest first."""
    gens = [g for g in root.glob("gen-*") if _GEN_NAME.fullmatch(g.name) and g.is_dir()]
    return sorted(gens, key=lambda g: int(g.name[4:]), reverse=True)


def _recorded_sources(root: Path) -> list[str]:
    """The paths of the last build that indexed something: ``sources.json``, else the newest readable manifest."""
    return _recorded(root)[0]


def _recorded(root: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The recorded sources: their paths, and the field map of each source that was read with one."""
    try:
        found = _parse_sources(json.loads((root / SOURCES_FILE).read_text(encoding="utf-8")))
        if found:
            return found
    except (OSError, ValueError):
        pass
    current = _current_or_none(root)
    gens = ([root / current] if current else []) + _generations(root)
    for gen in gens:
        manifest = Manifest.read(gen)
        if manifest.sources:
            return manifest.sources, manifest.source_fields
    return [], {}


def source_paths(manifest: Manifest) -> list[str]:
    """The paths an index was built from, as its manifest records them (with or without a field map)."""
    return list(manifest.sources)


def _parse_sources(data: object) -> tuple[list[str], dict[str, dict[str, str]]] | None:
    """Sources as recorded: each a path, or ``{"path": ..., "fields": {"text": "body"}}``; None when not that."""
    if not isinstance(data, list) or not data:
        return None
    paths: list[str] = []
    fields: dict[str, dict[str, str]] = {}
    for entry in data:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("fields"), dict):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in entry["fields"].items()):
                return None
            paths.append(entry["path"])
            fields[entry["path"]] = dict(entry["fields"])
        elif isinstance(entry, str):
            paths.append(entry)
        else:
            return None
    return paths, fields


def _source_entries(paths: list[str], fields: Mapping[str, Mapping[str, str]]) -> list:
    """What sources.json and the manifest record: a plain path, or a path with the field map it was read with."""
    return [{"path": p, "fields": dict(fields[p])} if fields.get(p) else p for p in paths]


def is_url(source: str) -> bool:
    """A recorded source that is a feed to poll (rag.feeds), not a file or folder."""
    return source.startswith(("http://", "https://"))


def recorded_feeds(root: str | Path) -> list[str]:
    """The feed URLs the index follows: a sync without named paths polls them again."""
    return [s for s in _recorded_sources(Path(root)) if is_url(s)]


def forget_feeds(root: str | Path, urls: Iterable[str]) -> None:
    """Stop following feeds; the pages fetched from them stay indexed."""
    root = Path(root)
    with writer_lock(root):
        recorded, fields = _recorded(root)
        unknown = [u for u in urls if u not in recorded or not is_url(u)]
        if unknown:
            raise RagError(f"{unknown[0]}: not a feed this index follows; nothing changed")
        _save_sources(root, _source_entries([s for s in recorded if s not in set(urls)], fields))


def _recorded_ids(root: Path) -> set[str]:
    """The document ids of the live index, read leniently (for a rebuild, which does not open it)."""
    return set(_recorded_manifest(root).documents)


# ---------------------------------------------------------------- writing
@contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """Hold the index's write lock; a second writer gets a clear error instead of waiting forever."""
    _not_a_folder(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        f = open(root / ".lock", "w")
    except OSError as exc:
        raise RagError(f"cannot write to the index folder {root}/ ({exc.strerror}): choose a writable folder with --index") from exc
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RagError(f"another process is updating the index at {root}/; try again when it finishes") from exc
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(
    root: str | Path,
    paths: Iterable[str | Path] | None = None,
    settings: Settings | None = None,
    rebuild: bool = False,
    progress: bool = False,
    allow_remove: bool = False,
    fields: str | Mapping[str, str] | None = None,
) -> UpdateReport:
    """Sync: make the index at ``root`` mirror the articles under ``paths``, embedding only what changed.

    With ``paths`` None the sources recorded by the last build are used. Files that cannot be
    read are reported in ``errors`` and, if an earlier version was indexed, that version is kept.
    A missing path, or dropping more than half of the indexed articles without ``allow_remove``,
    raises RagError and changes nothing. ``fields`` maps the fields of record files
    (``"text=body,date=published_at"``); it is recorded with the sources.
    """
    return update(root, settings, sync=paths, rebuild=rebuild, allow_remove=allow_remove, progress=progress, fields=fields)


def add(
    root: str | Path,
    paths: Iterable[str | Path],
    settings: Settings | None = None,
    progress: bool = False,
    fields: str | Mapping[str, str] | None = None,
) -> UpdateReport:
    """Add (or refresh) the articles under ``paths``; everything already indexed stays."""
    return update(root, settings, add=list(paths), progress=progress, fields=fields)


def remove(root: str | Path, doc_ids: Iterable[str], settings: Settings | None = None) -> UpdateReport:
    """Drop documents by id (file name; a record file's name drops all its records) from the index; nothing is re-embedded."""
    return update(root, settings, remove=list(doc_ids))


def update(
    root: str | Path,
    settings: Settings | None = None,
    *,
    sync: Iterable[str | Path] | None = None,
    add: Iterable[str | Path] | None = None,
    remove: Iterable[str] | None = None,
    rebuild: bool = False,
    allow_remove: bool = False,
    progress: bool = False,
    feeds: Iterable[str] = (),
    fields: str | Mapping[str, str] | None = None,
) -> UpdateReport:
    """The one write path behind sync, add and remove: publish a new generation atomically.

    A sync (or rebuild) refuses, changing nothing, when a given path does not exist or when it
    would drop more than half of the indexed articles, unless ``allow_remove``: a mistyped
    folder must not empty the index. ``feeds``: feed URLs (already polled by :mod:`rag.feeds`)
    to record among the sources. ``fields``: the field map for the record files of the given
    paths; without it, each source's recorded map (or the default names) is used.
    """
    settings = settings or Settings.from_env()
    root = Path(root)
    field_map = records.parse_fields(fields) or None
    if field_map and remove is not None:
        raise RagError("--fields is for reading record files; `rag index remove` reads none")
    t0 = time.perf_counter()
    report = UpdateReport()
    with writer_lock(root):
        old = _reusable(root, settings, rebuild)
        old_docs = old.docs if old else {}
        recorded, recorded_fields = _recorded(root)
        sources = _Sources(list(recorded), dict(recorded_fields))
        if remove is not None:
            new_docs, fresh_raws = _without(old_docs, remove), {}
        else:
            new_docs, fresh_raws = _load_sources(root, settings, old_docs, sources, report, sync, add, feeds, field_map, allow_remove)
        # keyed by the texts as they were embedded, before marking duplicates can change an old title or date
        stored = _stored_vectors(old)
        chunks, texts, raws = _chunk(new_docs, old, fresh_raws, settings, report)
        report.removed = sorted(set(old_docs) - set(new_docs))
        report.n_chunks = len(chunks)
        if _nothing_changed(old, new_docs, report, settings.dense_chunks_per_article):
            if sources.paths:  # the same articles may come from a new place, or an older index has no sources.json yet
                _save_sources(root, sources.entries())
        else:
            dense_ids, per_doc = _dense_choice(chunks, settings.dense_chunks_per_article)
            matrix = _embed(texts, dense_ids, stored, settings, progress, report)
            fault_point("after_embed")
            manifest = _new_manifest(settings, sources, new_docs, len(chunks), len(dense_ids), per_doc)
            dropped = [old_docs[i] for i in report.removed] if remove is not None else []
            _publish(root, manifest, new_docs, raws, chunks, matrix, dense_ids, texts, sources, dropped)
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------- the stages of an update
@dataclass
class _Sources:
    """The files, folders and feeds an index is built from, each record file's path with its field map."""

    paths: list[str]
    fields: dict[str, dict[str, str]]

    def entries(self) -> list:
        return _source_entries(self.paths, self.fields)


def _reusable(root: Path, settings: Settings, rebuild: bool) -> Index | None:
    """The live index when its chunks and vectors can be reused, None when everything is built anew."""
    if rebuild or _recorded_manifest(root).format_version != FORMAT_VERSION:
        return None  # another format is simply rebuilt
    old = Index.open(root)  # a corrupt index raises
    # a different embedder or chunker: everything is re-embedded
    return old if old.manifest.setup() == _setup(settings) else None


def _without(old_docs: dict[str, Document], names: Iterable[str]) -> dict[str, Document]:
    dropped = _removal(old_docs, names)
    return {k: v for k, v in old_docs.items() if k not in dropped}


def _load_sources(
    root: Path,
    settings: Settings,
    old_docs: dict[str, Document],
    sources: _Sources,
    report: UpdateReport,
    sync: Iterable[str | Path] | None,
    add: Iterable[str | Path] | None,
    feeds: Iterable[str],
    field_map: dict[str, str] | None,
    allow_remove: bool,
) -> tuple[dict[str, Document], dict[str, str]]:
    """Load and clean the articles of a sync or an add: the documents to index, and records' raw texts.

    Notes the load errors in ``report`` and what was indexed from where in ``sources``.
    """
    # feeds are polled by rag.feeds before an update; here they are only kept on record, and
    # a sync of named folders keeps them and the pages fetched: those are the index's own
    followed = list(dict.fromkeys(s for s in (*sources.paths, *feeds) if is_url(s)))
    paths = _given_paths(root, sources.paths, sync, add)
    listed, maps, loaded = _load_paths(paths, settings, field_map, sources.fields)
    new_docs = {d.id: d for d in loaded.documents}
    if add is not None:
        new_docs = {**old_docs, **new_docs}
        kept: list[str] = []
    else:
        kept = _keep_unloadable(old_docs, new_docs, {f.name for files in listed.values() for f in files}, loaded.failed)
        if not allow_remove:
            _refuse_mass_removal(set(old_docs) or _recorded_ids(root), set(new_docs))
    report.errors = _note_kept(loaded.errors, kept, old_docs)
    _remember_sources(sources, listed, maps, loaded.documents, new_docs, added=add is not None)
    sources.paths = [*(s for s in sources.paths if not is_url(s)), *followed]
    return new_docs, loaded.raws


def _given_paths(root: Path, recorded: list[str], sync: Iterable[str | Path] | None, add: Iterable[str | Path] | None) -> list[str]:
    """The resolved files and folders to read: those named, else the recorded ones and the fetched pages."""
    given = list(add if add is not None else sync if sync is not None else [s for s in recorded if not is_url(s)])
    if add is None and (root / FETCHED_DIR).is_dir():
        given.append(root / FETCHED_DIR)
    if not given:
        raise RagError("no articles given: name a folder or files, e.g. `rag index seeds/`")
    paths = list(dict.fromkeys(str(Path(p).resolve()) for p in given))
    if add is None:
        _refuse_missing(paths, named=sync is not None)
    return paths


def _load_paths(
    paths: list[str], settings: Settings, field_map: dict[str, str] | None, recorded_fields: Mapping[str, dict[str, str]]
) -> tuple[dict[str, list[Path]], dict[str, dict[str, str]], LoadResult]:
    """The article files under each path, the field map each path is read with, and what loading them gave."""
    walked = {p: iter_article_files([p]) for p in paths}  # each folder walked once, here
    listed = {p: files for p, (files, _) in walked.items()}
    n_files = sum(map(len, listed.values()))
    if n_files > settings.max_files_per_add:
        raise RagError(f"{n_files:,} files given; at most {settings.max_files_per_add:,} per update (RAG_MAX_FILES_PER_ADD)")
    maps = {p: field_map if field_map is not None else recorded_fields.get(p, {}) for p in paths}
    loaded = load_files(
        [f for files in listed.values() for f in files],
        settings.max_file_bytes,
        mark=False,  # marked by _chunk, with the kept ones
        fields={f: maps[p] for p, files in listed.items() for f in files},
    )
    loaded.errors = [e for _, errs in walked.values() for e in errs] + loaded.errors
    return listed, maps, loaded


def _remember_sources(
    sources: _Sources,
    listed: Mapping[str, list[Path]],
    maps: Mapping[str, dict[str, str]],
    loaded: list[Document],
    new_docs: Mapping[str, Document],
    added: bool,
) -> None:
    # only a path something was indexed from is remembered: `rag index` and --rebuild reuse them
    from_files = set(new_docs) | {_file_of(d) for d in new_docs.values()}
    indexed = [p for p in listed if any(f.name in from_files for f in listed[p])]
    if indexed:
        sources.paths = [*sources.paths, *(p for p in indexed if p not in sources.paths)] if added else indexed
    # a map is remembered once it has read something, so a sync that failed keeps the one that worked
    fresh = {_file_of(d) for d in loaded}
    for p in indexed:
        if maps[p] and any(f.name in fresh for f in listed[p]):
            sources.fields[p] = maps[p]


def _chunk(
    new_docs: dict[str, Document], old: Index | None, fresh_raws: Mapping[str, str], settings: Settings, report: UpdateReport
) -> tuple[list[Chunk], list[str], dict[str, str]]:
    """Every article's chunks (an unchanged one's taken over from ``old``), their texts to embed, and the raw texts.

    Duplicates are marked first: a copy inherits metadata from another, which its chunks' texts carry.
    """
    old_docs = old.docs if old else {}
    old_by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(old.chunks if old else []):
        old_by_doc.setdefault(c.doc_id, []).append(i)
    mark_duplicates(list(new_docs.values()))
    raws: dict[str, str] = {}
    chunks: list[Chunk] = []
    texts: list[str] = []
    for doc_id in sorted(new_docs):
        d = new_docs[doc_id]
        prev = old_docs.get(doc_id)
        if prev is not None and prev.content_hash == d.content_hash and (doc_id in old_by_doc or d is prev):
            report.unchanged.append(doc_id)
            doc_chunks = [old.chunks[i] for i in old_by_doc.get(doc_id, [])]
            raws[doc_id] = old.raw(doc_id)
        else:
            (report.updated if prev is not None else report.added).append(doc_id)
            raws[doc_id] = fresh_raws[doc_id] if d.record is not None else read_text(Path(d.path), settings.max_file_bytes)
            doc_chunks = chunk_document(d, raws[doc_id], settings.chunk_chars, settings.chunk_overlap_sentences)
        chunks.extend(doc_chunks)
        texts.extend(embed_text(c, d) for c in doc_chunks)
    return chunks, texts, raws


def _nothing_changed(old: Index | None, new_docs: Mapping[str, Document], report: UpdateReport, limit: int) -> bool:
    """True when the live generation already is what this update would write: no new generation then."""
    return (
        old is not None
        and not (report.added or report.updated or report.removed)
        and old.manifest.dense_chunks_per_article == limit
        and all(asdict(new_docs[i]) == asdict(old.docs[i]) for i in new_docs)
    )


def _dense_choice(chunks: list[Chunk], limit: int) -> tuple[list[int], dict[str, int]]:
    """The chunks that get a dense vector, and each article's chunk count.

    Dense vectors for the first ``limit`` passages of each article, BM25 for all of them: news
    states its facts first, and a long page's tail (live blogs, archives, link lists) costs
    embedding time out of proportion to what it adds; keywords still find it (README, RealTime QA).
    """
    per_doc: dict[str, int] = {}  # chunks seen so far per article; at the end, its chunk count
    dense_ids: list[int] = []
    for i, c in enumerate(chunks):
        if limit <= 0 or per_doc.get(c.doc_id, 0) < limit:
            dense_ids.append(i)
        per_doc[c.doc_id] = per_doc.get(c.doc_id, 0) + 1
    return dense_ids, per_doc


def _stored_vectors(old: Index | None) -> dict[str, np.ndarray]:
    """The live generation's vectors by the hash of their embedded text: a passage seen before is not embedded again."""
    if old is None:
        return {}
    vectors = old.vector_matrix()
    cache: dict[str, np.ndarray] = {}
    for r, i in enumerate(old.dense_ids):
        c = old.chunks[int(i)]
        cache[_key(embed_text(c, old.docs[c.doc_id]))] = vectors[r]
    return cache


def _embed(
    texts: list[str], dense_ids: list[int], cache: dict[str, np.ndarray], settings: Settings, progress: bool, report: UpdateReport
) -> np.ndarray:
    """The vectors of the chunks ``dense_ids``, in that order; only texts not in ``cache`` are embedded."""
    todo = [i for i in dense_ids if _key(texts[i]) not in cache]
    if todo:
        vecs = embedding.embed([texts[i] for i in todo], progress=progress, bulk=True, embed_precision=settings.embed_precision)
        for i, v in zip(todo, vecs):
            cache[_key(texts[i])] = v
    report.embedded_chunks = len(todo)
    if not dense_ids:
        return np.zeros((0, embedding.EMBEDDER_DIM), np.float32)
    return np.stack([cache[_key(texts[i])] for i in dense_ids])


def _new_manifest(
    settings: Settings, sources: _Sources, docs: Mapping[str, Document], n_chunks: int, n_dense: int, per_doc: Mapping[str, int]
) -> Manifest:
    embedder, precision, dim, chunker = _setup(settings)
    return Manifest(
        format_version=FORMAT_VERSION,
        embedder=embedder,
        precision=precision,
        dim=dim,
        chunker=chunker,
        sources=sources.paths,
        source_fields=sources.fields,
        n_chunks=n_chunks,
        dense_chunks_per_article=settings.dense_chunks_per_article,
        n_dense=n_dense,
        documents={d.id: ManifestDocument(d.content_hash, d.path, per_doc.get(d.id, 0)) for d in docs.values()},
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _publish(
    root: Path,
    manifest: Manifest,
    docs: Mapping[str, Document],
    raws: dict[str, str],
    chunks: list[Chunk],
    matrix: np.ndarray,
    dense_ids: list[int],
    texts: list[str],
    sources: _Sources,
    dropped: list[Document],
) -> None:
    """Write the new generation and make it live, then record the sources and delete removed fetched pages."""
    try:
        _write_generation(root, manifest, list(docs.values()), raws, chunks, matrix, np.asarray(dense_ids, dtype=np.int64), texts)
        if sources.paths:
            _save_sources(root, sources.entries())
        _drop_fetched(root, dropped)
    except OSError as exc:  # a full disk or a folder made read-only: the live generation is untouched
        raise RagError(f"cannot write the index at {root}/ ({exc.strerror or exc}); nothing changed: free space or fix its permissions") from exc


def _drop_fetched(root: Path, docs: list[Document]) -> None:
    """Delete the files of fetched pages that were removed, or every sync would index them again.

    Their sidecars stay: they record the entry as seen, so a feed re-poll does not fetch it back.
    """
    folder = (root / FETCHED_DIR).resolve()
    for d in docs:
        if Path(d.path).is_relative_to(folder):
            Path(d.path).unlink(missing_ok=True)


def _refuse_missing(paths: list[str], named: bool) -> None:
    """A sync to a path that does not exist would drop everything indexed from it: refuse instead."""
    missing = [p for p in paths if not os.path.exists(p)]
    if not missing:
        return
    if named:
        raise RagError(f"{missing[0]}: no such file or folder; nothing changed (check the path)")
    raise RagError(
        f"{missing[0]}: the folder of the last build no longer exists; nothing changed: name the folders, e.g. `rag index FOLDER`"
    )


def _refuse_mass_removal(before: set[str], after: set[str], share: float = 0.5) -> None:
    """Refuse a sync that would drop more than ``share`` of the indexed articles (a typo, a wrong folder)."""
    gone = sorted(before - after)
    if not before or len(gone) <= share * len(before):
        return
    shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
    raise RagError(
        f"this would remove {len(gone)} of the {len(before)} indexed articles ({shown}); nothing changed: "
        "to drop them on purpose use `rag index remove DOC...` or repeat with --allow-remove"
    )


def _file_of(doc: Document) -> str:
    """The name of the file a document was read from: its id, or for a record the part before "#<key>"."""
    return doc.id[: -len(doc.record) - 1] if doc.record is not None else doc.id


def _removal(old_docs: dict[str, Document], names: Iterable[str]) -> set[str]:
    """The ids ``rag index remove`` drops: each name a document id, or a record file's name for all its records."""
    by_file: dict[str, set[str]] = {}
    for d in old_docs.values():
        if d.record is not None:
            by_file.setdefault(_file_of(d), set()).add(d.id)
    dropped: set[str] = set()
    unknown: list[str] = []
    for name in names:
        if name in old_docs:
            dropped.add(name)
        elif name in by_file:
            dropped |= by_file[name]
        else:
            unknown.append(name)
    if unknown:
        raise RagError(f"not in the index: {', '.join(sorted(unknown))} (`rag list` shows what is)")
    return dropped


def _keep_unloadable(
    old_docs: dict[str, Document], new_docs: dict[str, Document], listed: set[str], failed: Mapping[str, set[str] | None]
) -> list[str]:
    """Put back the indexed version of each file that is still there but failed to load this time.

    A record file's records are put back when the file failed, or when some of its records did
    and one of those could be the record (a line too broken to name its record hides which).
    """
    kept = []
    for doc_id, d in old_docs.items():
        if doc_id in new_docs:
            continue
        if d.record is None:
            if doc_id in listed:
                kept.append(doc_id)
            continue
        name = _file_of(d)
        if name in failed and (failed[name] is None or doc_id in failed[name]):
            kept.append(doc_id)
    for doc_id in kept:
        new_docs[doc_id] = old_docs[doc_id]
    return sorted(kept)


def _note_kept(errors: list[LoadError], kept: list[str], old_docs: Mapping[str, Document]) -> list[LoadError]:
    """The load errors, each kept file's line saying that its last indexed version stays."""
    errors = list(errors)
    by_file: dict[str, list[str]] = {}
    for doc_id in kept:
        if old_docs[doc_id].record is not None:
            by_file.setdefault(_file_of(old_docs[doc_id]), []).append(doc_id)
            continue
        # a line about the file or its sidecar
        at = next((i for i, e in enumerate(errors) if e.where in (doc_id, f"{doc_id}.meta.json")), None)
        if at is None:
            errors.append(LoadError(doc_id, "could not be loaded; kept the last indexed version"))
        else:
            errors[at] = errors[at].amended("; kept the last indexed version")
    for name, ids in by_file.items():
        what = f"{len(ids)} record{'s' if len(ids) > 1 else ''} indexed earlier"
        at = next((i for i, e in enumerate(errors) if e.where == name), None)  # the file as a whole failed
        if at is None:
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            errors.append(LoadError(name, f"kept the last indexed version of {what} that did not load this time ({shown})"))
        else:
            errors[at] = errors[at].amended(f"; kept its {what}")
    return errors


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader or a crash sees the old content or the new, never half."""
    with published(path, sync=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _save_sources(root: Path, sources: list[str]) -> None:
    path = root / SOURCES_FILE
    text = json.dumps(sources, indent=1, ensure_ascii=False)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass  # missing or damaged: written anew
    _write_atomic(path, text)


def fault_point(name: str) -> None:
    """Crash-test hook: ``RAG_FAULT=<name>`` kills the process here, as a power cut would."""
    if os.environ.get("RAG_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _write_generation(
    root: Path,
    manifest: Manifest,
    docs: list[Document],
    raws: dict[str, str],
    chunks: list[Chunk],
    matrix: np.ndarray,
    dense_ids: np.ndarray,
    texts: list[str],
) -> None:
    import bm25s
    import faiss

    cur = root / "CURRENT"
    prev = _current_or_none(root)
    # past every generation on disk: one a killed writer published but never made current is an orphan
    n = max([int(g.name[4:]) for g in _generations(root)], default=0) + 1
    name = f"gen-{n:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "documents.json").write_text(json.dumps([asdict(d) for d in sorted(docs, key=lambda d: d.id)], ensure_ascii=False))
    with open(tmp / "raw.jsonl", "w", encoding="utf-8") as f:
        for doc_id in sorted(raws):
            f.write(json.dumps({"id": doc_id, "raw": raws[doc_id]}, ensure_ascii=False) + "\n")
    with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
    vi = faiss.IndexFlatIP(embedding.EMBEDDER_DIM)
    if len(matrix):
        vi.add(np.ascontiguousarray(matrix, dtype=np.float32))
    faiss.write_index(vi, str(tmp / "vectors.faiss"))
    np.save(tmp / "dense_ids.npy", dense_ids)
    if texts:
        bm = bm25s.BM25()
        bm.index(bm25_tokenize(texts), show_progress=False)
        bm.save(str(tmp / "bm25"))
    # the manifest goes last: a generation without one is incomplete
    fault_point("during_write")
    (tmp / "manifest.json").write_text(manifest.to_json())
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(tmp, root / name)
    fault_point("before_swap")
    _write_atomic(cur, name)
    # older generations are garbage once CURRENT moved; keep the previous one for readers mid-open
    for old in sorted(root.glob("gen-*")):
        if old.name not in (name, prev):
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
