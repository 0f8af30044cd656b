"""Build, persist, open and incrementally update the index (FAISS vectors + BM25 + chunk store).

Layout of an index folder::

    index/
      CURRENT          name of the live generation, replaced atomically
      gen-000007/      manifest.json: the live segments, the articles deleted from each, the embedder and chunker
      segments/        immutable segments shared between generations (rag.segments: articles, passages,
                       raw texts, vectors, BM25 term counts, shingle samples)
      sources.json     the files and folders of the last build that indexed something (a record file's with its
                       field map), and the feeds followed; replaced atomically
      fetched/         pages rag.feeds fetched, indexed like any folder
      .lock            held by the one writer

A write adds a segment beside the live ones, publishes a new generation and then swaps
``CURRENT`` with ``os.replace``: a reader, or a crash at any point, sees the old index or the new
one. With ``Settings.ray`` the articles it reads are loaded, chunked, embedded and written as
segments on a Ray cluster (:mod:`rag.distributed`).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import distributed, embedding, records, segments
from .chunking import chunk_document
from .corpus import LoadError, LoadResult, iter_article_files, load_files, read_text
from .dedup import affected, mark_duplicates, sample, shingles
from .files import published
from .settings import Settings
from .types import Chunk, Document, RagError

if TYPE_CHECKING:  # imported where used: it loads slowly, and many commands never open an index
    import faiss

FORMAT_VERSION = 5  # 5: immutable segments shared between generations; 4: Document.inherited (metadata filled in from another copy), .record and .html (records of a file)
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
class SegmentRef:
    """A live segment of a generation, and the articles deleted from it since it was written."""

    name: str
    deleted: tuple[str, ...] = ()


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
    documents: dict[str, ManifestDocument] = field(default_factory=dict)  # older formats only: read to rebuild them
    segments: list[SegmentRef] = field(default_factory=list)
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
            documents={k: _manifest_document(v) for k, v in docs.items()} if isinstance(docs, dict) else {},
            segments=_segment_refs(data.get("segments")),
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
            "segments": [{"name": r.name, "deleted": list(r.deleted)} for r in self.segments],
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


def _segment_refs(data: object) -> list[SegmentRef]:
    refs = []
    for entry in data if isinstance(data, list) else []:
        name = entry.get("name") if isinstance(entry, dict) else None
        deleted = entry.get("deleted") if isinstance(entry, dict) else None
        # a name that is not a segment (garbage, or a path such as ../x) is never followed
        if isinstance(name, str) and segments.SEGMENT_NAME.fullmatch(name) and isinstance(deleted, list):
            refs.append(SegmentRef(name, tuple(d for d in deleted if isinstance(d, str))))
    return refs


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
        bm25: segments.SegmentedBM25 | None,
        raw: dict[str, str],
        vector_blocks: list[tuple[str, np.ndarray]] | None = None,
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
        # per live segment, in row order: its name and which of its vector rows this generation keeps (rag.ann)
        self.vector_blocks = vector_blocks or []

    # ------------------------------------------------------------ open
    @classmethod
    def open(cls, root: str | Path) -> Index:
        """Open the live generation of the index at ``root``; raises RagError if missing or corrupt."""
        import faiss

        root = Path(root)
        gen = root / current_name(root)
        fix = _rebuild_hint(root)
        part = gen / "manifest.json"  # the file being read, named when it turns out damaged
        try:
            manifest = Manifest.from_json(json.loads(part.read_text(encoding="utf-8")))
            if manifest.format_version != FORMAT_VERSION:
                raise RagError(f"index at {root}/ has format {manifest.format_version}, this version reads {FORMAT_VERSION}: {fix}")
            parts = [_Segment.read(root, ref) for ref in manifest.segments]
        except RagError:
            raise
        except _Damaged as exc:
            raise RagError(f"index file {exc.part} is corrupt ({exc.reason}); {fix}") from exc
        except Exception as exc:  # any unreadable or truncated file
            raise RagError(f"index file {part} is corrupt ({type(exc).__name__}: {exc}); {fix}") from exc
        docs: dict[str, Document] = {}
        raw: dict[str, str] = {}
        chunks: list[Chunk] = []
        dense_ids: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        terms = []
        blocks: list[tuple[str, np.ndarray]] = []
        for ref, p in zip(manifest.segments, parts):  # the live passages of each segment, numbered on from the ones before
            at = np.full(len(p.chunks), -1, np.int64)
            live = np.flatnonzero(p.live)
            at[live] = np.arange(len(chunks), len(chunks) + len(live))
            chunks.extend(p.chunks[i] for i in live)
            docs.update((d.id, d) for d in p.docs if d.id not in p.deleted)
            raw.update((k, v) for k, v in p.raws.items() if k not in p.deleted)
            kept = at[p.dense_rows] >= 0
            dense_ids.append(at[p.dense_rows][kept])
            rows.append(p.vectors[kept])
            blocks.append((ref.name, np.flatnonzero(kept)))
            terms.append((p.terms, at))
        vectors = faiss.IndexFlatIP(embedding.EMBEDDER_DIM)
        matrix = np.concatenate(rows) if rows else np.zeros((0, embedding.EMBEDDER_DIM), np.float32)
        if len(matrix):
            vectors.add(np.ascontiguousarray(matrix, dtype=np.float32))
        ids = np.concatenate(dense_ids) if dense_ids else np.zeros(0, np.int64)
        if manifest.n_chunks != len(chunks) or set(raw) != set(docs):
            raise RagError(f"index at {gen}/ is corrupt (its manifest and segments disagree); {fix}")
        bm25 = segments.SegmentedBM25(terms) if chunks else None
        return cls(root, gen, manifest, docs, chunks, vectors, ids, bm25, raw, blocks)

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


class _Damaged(Exception):
    """A segment file that cannot be read, or that disagrees with the segment's meta.json."""

    def __init__(self, part: Path, reason: str) -> None:
        super().__init__(reason)
        self.part, self.reason = part, reason


@dataclass
class _Segment:
    """One live segment as :meth:`Index.open` reads it whole."""

    docs: list[Document]
    deleted: set[str]
    raws: dict[str, str]
    chunks: list[Chunk]
    live: np.ndarray  # per passage: its article is not deleted
    dense_rows: np.ndarray  # the passage of each vector row
    vectors: np.ndarray
    terms: segments.Terms

    @classmethod
    def read(cls, root: Path, ref: SegmentRef) -> _Segment:
        folder = root / segments.SEGMENTS_DIR / ref.name
        read = {
            "meta.json": segments.read_meta,
            "documents.json": segments.read_documents,
            "chunks.jsonl": lambda f: [c for _, c in segments.read_chunks(f)],
            "raw.jsonl": segments.read_raws,
            "vectors.npy": segments.read_vectors,
            "terms.npz": segments.Terms.load,
        }
        got: dict[str, Any] = {}
        for name, how in read.items():
            try:
                got[name] = how(folder)
            except Exception as exc:  # any unreadable or truncated file
                raise _Damaged(folder / name, f"{type(exc).__name__}: {exc}") from exc
        meta, docs, chunks = got["meta.json"], got["documents.json"], got["chunks.jsonl"]
        vectors, terms = got["vectors.npy"], got["terms.npz"]
        if [d.id for d in docs] != meta.docs or set(got["raw.jsonl"]) != set(meta.docs):
            raise _Damaged(folder / "documents.json", "its articles are not those of meta.json")
        if len(chunks) != meta.n_chunks or len(terms.lengths) != meta.n_chunks:
            raise _Damaged(folder / "chunks.jsonl", "its passages are not those of meta.json")
        if vectors.ndim != 2 or vectors.shape != (sum(meta.dense), embedding.EMBEDDER_DIM):
            raise _Damaged(folder / "vectors.npy", f"{vectors.shape} vectors where meta.json counts {sum(meta.dense)}")
        deleted = set(ref.deleted)
        live = np.ones(len(chunks), bool)
        dense_rows: list[int] = []
        for doc_id, (start, stop), n in zip(meta.docs, meta.chunk_range().values(), meta.dense):
            live[start:stop] = doc_id not in deleted
            dense_rows.extend(range(start, start + n))
        return cls(docs, deleted, got["raw.jsonl"], chunks, live, np.asarray(dense_rows, np.int64), vectors, terms)


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
    manifest = _recorded_manifest(root)
    ids = set(manifest.documents)  # an older format lists them in its manifest
    for ref in manifest.segments:
        try:
            ids |= set(segments.read_meta(root / segments.SEGMENTS_DIR / ref.name).docs) - set(ref.deleted)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged segment: what can be read still counts
    return ids


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


def compact(root: str | Path, settings: Settings | None = None, progress: bool = False) -> UpdateReport:
    """Merge the index's segments into one (deleted articles dropped for good); nothing is embedded again."""
    return update(root, settings, compact=True, progress=progress)


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
    compact: bool = False,
) -> UpdateReport:
    """The one write path behind sync, add, remove and compact: publish a new generation atomically.

    A write adds one segment holding the articles it adds or changes (merged with the newest
    segments when they are no bigger, so an index keeps a few segments, each at least twice the
    size of the next) and deletes the old versions from their segments; ``compact`` merges all
    segments into one.

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
        if settings.ray and not compact and remove is None:
            distributed.connect(settings.ray, progress)
        live = _reusable(root, settings, rebuild)
        old_docs = dict(live.docs) if live else {}
        recorded, recorded_fields = _recorded(root)
        sources = _Sources(list(recorded), dict(recorded_fields))
        if compact:
            new_docs, fresh_raws = dict(old_docs), {}
        elif remove is not None:
            new_docs, fresh_raws = _without(old_docs, remove), {}
        else:
            new_docs, fresh_raws = _load_sources(root, settings, old_docs, sources, report, sync, add, feeds, field_map, allow_remove)
        plan = _plan(live, old_docs, new_docs, settings, report, whole=compact)
        report.removed = sorted(set(old_docs) - set(new_docs))
        if plan.nothing_to_do(live):
            report.n_chunks = live.n_chunks(plan.refs) if live else 0
            if sources.paths:  # the same articles may come from a new place, or an older index has no sources.json yet
                _save_sources(root, sources.entries())
        else:
            written, n_written, embedded_written = [], 0, 0
            if settings.ray and plan.fresh:
                # the articles read now are chunked, embedded and written as segments by the cluster's
                # workers; what this write takes over from old segments (their vectors stored) stays here
                fresh = [plan.write[i] for i in sorted(plan.fresh)]
                written, n_written, embedded_written = distributed.write_segments(root, fresh, fresh_raws, settings, write_fresh_segment)
                plan = replace(plan, write={i: d for i, d in plan.write.items() if i not in plan.fresh}, fresh=set())
            try:
                data = _segment_data(plan, live, fresh_raws, settings, progress, report)
                report.embedded_chunks += embedded_written
                fault_point("after_embed")
                report.n_chunks = (live.n_chunks(plan.refs) if live else 0) + sum(map(len, data.chunks.values())) + n_written
                manifest = _new_manifest(settings, sources, report.n_chunks)
                dropped = [old_docs[i] for i in report.removed] if remove is not None else []
                _publish(root, manifest, plan.refs, data, sources, dropped, written)
            finally:  # the workers' folders that did not become segments (the write failed) go now, not at the next write
                for name in written:
                    shutil.rmtree(root / segments.SEGMENTS_DIR / name, ignore_errors=True)
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


def _reusable(root: Path, settings: Settings, rebuild: bool) -> _Live | None:
    """The live index when its chunks and vectors can be reused, None when everything is built anew."""
    if rebuild or _recorded_manifest(root).format_version != FORMAT_VERSION:
        return None  # another format is simply rebuilt
    live = _Live.open(root)  # a corrupt index raises
    # a different embedder or chunker: everything is re-embedded
    return live if live.manifest.setup() == _setup(settings) else None


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
    files = [f for files in listed.values() for f in files]
    file_fields = {f: maps[p] for p, files in listed.items() for f in files}
    if settings.ray:  # each file loaded and cleaned by a task on the cluster
        loaded = distributed.load(files, settings.max_file_bytes, file_fields)
    else:  # marked by _plan, with the kept ones
        loaded = load_files(files, settings.max_file_bytes, mark=False, fields=file_fields)
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


@dataclass
class _Live:
    """The live generation as a writer needs it: its segments and articles, not their passages or vectors."""

    root: Path
    manifest: Manifest
    metas: dict[str, segments.SegmentMeta]
    docs: dict[str, Document]
    home: dict[str, str]  # article -> the segment holding it

    @classmethod
    def open(cls, root: Path) -> _Live:
        gen = root / current_name(root)
        fix = _rebuild_hint(root)
        part = gen / "manifest.json"
        try:
            manifest = Manifest.from_json(json.loads(part.read_text(encoding="utf-8")))
            metas: dict[str, segments.SegmentMeta] = {}
            docs: dict[str, Document] = {}
            home: dict[str, str] = {}
            for ref in manifest.segments:
                folder = root / segments.SEGMENTS_DIR / ref.name
                part = folder / "meta.json"
                metas[ref.name] = segments.read_meta(folder)
                part = folder / "documents.json"
                for d in segments.read_documents(folder):
                    if d.id not in ref.deleted:
                        docs[d.id], home[d.id] = d, ref.name
        except Exception as exc:  # any unreadable or truncated file
            raise RagError(f"index file {part} is corrupt ({type(exc).__name__}: {exc}); {fix}") from exc
        return cls(root, manifest, metas, docs, home)

    def folder(self, name: str) -> Path:
        return self.root / segments.SEGMENTS_DIR / name

    def n_chunks(self, refs: Iterable[SegmentRef]) -> int:
        """The passages of the live articles of ``refs``."""
        return sum(n for r in refs for d, n in zip(self.metas[r.name].docs, self.metas[r.name].chunks) if d not in r.deleted)

    def sharing(self, fresh: Mapping[str, set[int]]) -> Callable[[set[int]], list[str]]:
        """Articles whose shingle sample holds one of some hashes: the stored samples, and ``fresh`` ones (article -> sample)."""
        postings: dict[int, list[str]] = {}
        for name, meta in self.metas.items():
            doc, hashes = segments.read_samples(self.folder(name))
            for k, h in zip(doc.tolist(), hashes.tolist()):
                d = meta.docs[k]
                if self.home.get(d) == name and d not in fresh:
                    postings.setdefault(h, []).append(d)
        for d, hashes in fresh.items():
            for h in hashes:
                postings.setdefault(h, []).append(d)
        return lambda hashes: [d for h in hashes for d in postings.get(h, ())]


@dataclass
class _Plan:
    """What a write does: the articles of its new segment, and the old segments it keeps."""

    write: dict[str, Document]  # the new segment's articles
    fresh: set[str]  # among them, those read from their files now: chunked anew
    refs: list[SegmentRef]  # the old segments kept, with the articles deleted from them
    before: dict[str, Document]  # an old article as it was stored, where this write changes it
    dense_limit: int

    def nothing_to_do(self, live: _Live | None) -> bool:
        """True when the live generation already is what this write would publish."""
        return (
            live is not None
            and not self.write
            and self.refs == live.manifest.segments
            and live.manifest.dense_chunks_per_article == self.dense_limit
        )


def _own(d: Document) -> dict:
    """What an article states itself: its fields without what duplicate marking filled in."""
    data = asdict(d)
    for name in d.inherited:
        data[name] = None
    data["inherited"], data["duplicate_of"] = {}, None
    return data


def _plan(
    live: _Live | None, old_docs: Mapping[str, Document], new_docs: dict[str, Document], settings: Settings, report: UpdateReport, whole: bool
) -> _Plan:
    """Sort the articles into unchanged, added and updated; mark duplicates; choose what the new segment holds.

    Only the articles a change can reach are marked again (:func:`rag.dedup.affected`); an old
    article whose marks change moves to the new segment.
    """
    limit = settings.dense_chunks_per_article
    unchanged = {i for i, d in new_docs.items() if i in old_docs and (d is old_docs[i] or _own(d) == _own(old_docs[i]))}
    for i in sorted(new_docs):
        if i in unchanged:
            new_docs[i] = old_docs[i]  # the stored article, with its marks
            report.unchanged.append(i)
        else:
            (report.updated if i in old_docs else report.added).append(i)
    fresh = set(new_docs) - unchanged
    if live is None or whole or live.manifest.dense_chunks_per_article != limit:
        before = {i: copy.deepcopy(old_docs[i]) for i in unchanged}
        mark_duplicates(list(new_docs.values()))
        return _Plan(dict(new_docs), fresh, [], before, limit)
    gone = set(old_docs) - unchanged  # removed, or replaced by a new version
    seeds = fresh | {old_docs[i].duplicate_of for i in gone if old_docs[i].duplicate_of}
    seeds |= {i for i in unchanged if new_docs[i].duplicate_of in gone}
    samples = {i: sample(shingles(new_docs[i].text)) for i in fresh}
    reach = affected(seeds, new_docs, live.sharing(samples))
    before = {i: copy.deepcopy(new_docs[i]) for i in reach & unchanged}
    mark_duplicates([new_docs[i] for i in reach])
    moved = {i for i in before if asdict(new_docs[i]) != asdict(before[i])}
    write = {i: new_docs[i] for i in sorted(fresh | moved)}
    deleted = gone | moved
    refs = [
        SegmentRef(r.name, tuple(sorted({*r.deleted, *(d for d in live.metas[r.name].docs if d in deleted)})))
        for r in live.manifest.segments
    ]
    refs = [r for r in refs if len(r.deleted) < len(live.metas[r.name].docs)]  # a segment all deleted is dropped
    # merge the newest segments while they are no bigger than what is written: each segment ends up
    # at least twice the size of the next, so there are about log2(articles) of them, and an article
    # is rewritten about that many times over its life
    while write and refs and len(live.metas[refs[-1].name].docs) - len(refs[-1].deleted) <= len(write):
        r = refs.pop()
        for d in live.metas[r.name].docs:
            if d not in r.deleted:
                write[d] = new_docs[d]
                before.setdefault(d, new_docs[d])
    return _Plan(dict(sorted(write.items())), fresh, refs, before, limit)


def _segment_data(
    plan: _Plan, live: _Live | None, fresh_raws: Mapping[str, str], settings: Settings, progress: bool, report: UpdateReport
) -> segments.SegmentData:
    """The new segment: its articles' passages (an old article's taken over), texts and vectors.

    Only a passage whose embedded text no stored vector has is embedded.
    """
    stored: dict[str, list[str]] = {}  # old segment -> its articles whose passages or vectors this write reuses
    for i in plan.write:
        if live is not None and i in live.home:
            stored.setdefault(live.home[i], []).append(i)
    chunks: dict[str, list[Chunk]] = {}
    raws: dict[str, str] = {}
    cache: dict[str, np.ndarray] = {}
    for name, ids in stored.items():
        folder, meta = live.folder(name), live.metas[name]
        span, dense = meta.chunk_range(), meta.dense_range()
        rows = {r for i in ids for r in range(*span[i])}
        old_chunks: dict[str, list[Chunk]] = {}
        for _, c in segments.read_chunks(folder, rows):
            old_chunks.setdefault(c.doc_id, []).append(c)
        vectors = segments.read_vectors(folder, mmap=True)
        kept = [i for i in ids if i not in plan.fresh]
        raws.update(segments.read_raws(folder, set(kept)))
        for i in ids:
            old_doc = plan.before.get(i) or live.docs[i]
            for c, r in zip(old_chunks.get(i, []), range(*dense[i])):
                cache[_key(embed_text(c, old_doc))] = np.asarray(vectors[r])
            if i not in plan.fresh:
                chunks[i] = old_chunks.get(i, [])
    for i in plan.fresh:
        d = plan.write[i]
        raws[i] = fresh_raws[i] if d.record is not None else read_text(Path(d.path), settings.max_file_bytes)
        chunks[i] = chunk_document(d, raws[i], settings.chunk_chars, settings.chunk_overlap_sentences)
    texts = {i: [embed_text(c, d) for c in chunks[i]] for i, d in plan.write.items()}
    # dense vectors for the first passages of each article, BM25 for all of them: news states its
    # facts first, and a long page's tail (live blogs, archives, link lists) costs embedding time
    # out of proportion to what it adds; keywords still find it (README, RealTime QA)
    dense = {i: t if plan.dense_limit <= 0 else t[: plan.dense_limit] for i, t in texts.items()}
    todo = list(dict.fromkeys(k for t in dense.values() for k in map(_key, t) if k not in cache))
    by_key = {_key(t): t for ts in dense.values() for t in ts}
    new = set(todo)
    if todo:
        vecs = embedding.embed([by_key[k] for k in todo], progress=progress, bulk=True, embed_precision=settings.embed_precision)
        cache.update(zip(todo, vecs))
    report.embedded_chunks = sum(k in new for t in dense.values() for k in map(_key, t))  # passages, a repeated text each time
    vectors = {
        i: np.stack([cache[_key(t)] for t in ts]) if ts else np.zeros((0, embedding.EMBEDDER_DIM), np.float32) for i, ts in dense.items()
    }
    return segments.SegmentData(list(plan.write.values()), raws, chunks, vectors, texts)


def write_fresh_segment(folder: Path, docs: list[Document], record_raws: Mapping[str, str], settings: Settings) -> tuple[int, int]:
    """Chunk, embed and write articles read now (their duplicate marks set) as a segment in ``folder``.

    What a cluster's worker does with its batch (:mod:`rag.distributed`), the same steps a local
    write takes. ``record_raws``: the raw texts of records (an article file is read again from its
    path). Returns the segment's passages and the passages embedded.
    """
    plan = _Plan({d.id: d for d in sorted(docs, key=lambda d: d.id)}, {d.id for d in docs}, [], {}, settings.dense_chunks_per_article)
    report = UpdateReport()
    data = _segment_data(plan, None, record_raws, settings, False, report)
    segments.write(folder, data)
    return sum(map(len, data.chunks.values())), report.embedded_chunks


def _new_manifest(settings: Settings, sources: _Sources, n_chunks: int) -> Manifest:
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
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _publish(
    root: Path,
    manifest: Manifest,
    refs: list[SegmentRef],
    data: segments.SegmentData,
    sources: _Sources,
    dropped: list[Document],
    written: Iterable[str] = (),
) -> None:
    """Write the new segment and generation and make it live, then record the sources and delete removed fetched pages.

    ``written``: complete segments a cluster's workers wrote under temporary names, listed first.
    """
    try:
        refs = list(refs)
        for tmp in written:
            name = segments.next_name(root)
            os.replace(root / segments.SEGMENTS_DIR / tmp, root / segments.SEGMENTS_DIR / name)
            refs.append(SegmentRef(name))
        if data.docs:
            name = segments.next_name(root)
            tmp = root / segments.SEGMENTS_DIR / f".tmp-{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            segments.write(tmp, data, fault=lambda: fault_point("during_write"))
            os.replace(tmp, root / segments.SEGMENTS_DIR / name)
            refs.append(SegmentRef(name))
        _write_generation(root, replace(manifest, segments=refs))
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


def _write_generation(root: Path, manifest: Manifest) -> None:
    """Publish ``manifest`` as the next generation, make it live, and delete what no kept generation uses."""
    cur = root / "CURRENT"
    prev = _current_or_none(root)
    # past every generation on disk: one a killed writer published but never made current is an orphan
    n = max([int(g.name[4:]) for g in _generations(root)], default=0) + 1
    name = f"gen-{n:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / name)
    fault_point("before_swap")
    _write_atomic(cur, name)
    # older generations are garbage once CURRENT moved; keep the previous one for readers mid-open
    for old in sorted(root.glob("gen-*")):
        if old.name not in (name, prev):
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # likewise the segments only those generations listed, and the folders of killed writers
    kept = {r.name for g in (name, prev) if g for r in Manifest.read(root / g).segments}
    segments.remove_unlisted(root, kept)
