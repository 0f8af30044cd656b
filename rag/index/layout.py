"""An index folder's layout: ``CURRENT``, the generations and their manifests, ``sources.json``, the writer's lock.

Layout of an index folder::

    index/
      CURRENT          name of the live generation, replaced atomically
      gen-000007/      manifest.json: the live segments, the articles deleted from each, the embedder and chunker
      segments/        immutable segments shared between generations (rag.index.segments: articles, passages,
                       raw texts, vectors, BM25 term counts, shingle samples)
      sources.json     the files and folders of the last build that indexed something (a record file's with its
                       field map), and the feeds followed; replaced atomically
      fetched/         pages rag.ingest.feeds fetched, indexed like any folder
      .lock            held by the one writer
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import published
from ..settings import Settings
from ..types import RagError
from . import embedding, segments

FORMAT_VERSION = 5  # 5: immutable segments shared between generations; 4: Document.inherited (metadata filled in from another copy), .record and .html (records of a file)
SOURCES_FILE = "sources.json"  # outside the generations: a damaged CURRENT or manifest cannot take it along
FETCHED_DIR = "fetched"  # pages rag.ingest.feeds fetched, stored as .html files with sidecars
_GEN_NAME = re.compile(r"gen-\d{6,}")


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
            "sources": source_entries(self.sources, self.source_fields),
            "n_chunks": self.n_chunks,
            "dense_chunks_per_article": self.dense_chunks_per_article,
            "segments": [{"name": r.name, "deleted": list(r.deleted)} for r in self.segments],
            "built_at": self.built_at,
        }
        return json.dumps(data, indent=1, ensure_ascii=False)

    def setup(self) -> tuple[str | None, str | None, int | None, ChunkerSetup | None]:
        """The embedder, its precision, the vector size and the chunker: what the stored vectors depend on."""
        return self.embedder, self.precision, self.dim, self.chunker


def setup_of(settings: Settings) -> tuple[str, str, int, ChunkerSetup]:
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


# ---------------------------------------------------------------- reading the layout
def rebuild_hint(root: Path) -> str:
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
            raise RagError(f"{cur} is missing; {rebuild_hint(root)}")
        raise RagError(f"no index at {root}/: build one with `rag index seeds/`")
    try:
        name = cur.read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"{cur} is unreadable ({exc}); {rebuild_hint(root)}") from exc
    # a name that is not a generation here (garbage, or a path such as ../x) is never followed
    if not _GEN_NAME.fullmatch(name) or not (root / name).is_dir():
        raise RagError(f"{cur} does not name a generation of this index ({name[:40]!r}); {rebuild_hint(root)}")
    return name


def current_or_none(root: Path) -> str | None:
    try:
        return current_name(root)
    except RagError:
        return None


def recorded_manifest(root: Path) -> Manifest:
    """The live manifest, read leniently so a damaged or older index can still be rebuilt."""
    name = current_or_none(root)
    return Manifest.read(root / name) if name else Manifest()


def generations(root: Path) -> list[Path]:
    """The index's generation folders, newest first."""
    gens = [g for g in root.glob("gen-*") if _GEN_NAME.fullmatch(g.name) and g.is_dir()]
    return sorted(gens, key=lambda g: int(g.name[4:]), reverse=True)


def _recorded_sources(root: Path) -> list[str]:
    """The paths of the last build that indexed something: ``sources.json``, else the newest readable manifest."""
    return read_sources(root)[0]


def read_sources(root: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The recorded sources: their paths, and the field map of each source that was read with one."""
    try:
        found = _parse_sources(json.loads((root / SOURCES_FILE).read_text(encoding="utf-8")))
        if found:
            return found
    except (OSError, ValueError):
        pass
    current = current_or_none(root)
    gens = ([root / current] if current else []) + generations(root)
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


def source_entries(paths: list[str], fields: Mapping[str, Mapping[str, str]]) -> list:
    """What sources.json and the manifest record: a plain path, or a path with the field map it was read with."""
    return [{"path": p, "fields": dict(fields[p])} if fields.get(p) else p for p in paths]


def is_url(source: str) -> bool:
    """A recorded source that is a feed to poll (rag.ingest.feeds), not a file or folder."""
    return source.startswith(("http://", "https://"))


def recorded_feeds(root: str | Path) -> list[str]:
    """The feed URLs the index follows: a sync without named paths polls them again."""
    return [s for s in _recorded_sources(Path(root)) if is_url(s)]


def forget_feeds(root: str | Path, urls: Iterable[str]) -> None:
    """Stop following feeds; the pages fetched from them stay indexed."""
    root = Path(root)
    with writer_lock(root):
        recorded, fields = read_sources(root)
        unknown = [u for u in urls if u not in recorded or not is_url(u)]
        if unknown:
            raise RagError(f"{unknown[0]}: not a feed this index follows; nothing changed")
        save_sources(root, source_entries([s for s in recorded if s not in set(urls)], fields))


def recorded_ids(root: Path) -> set[str]:
    """The document ids of the live index, read leniently (for a rebuild, which does not open it)."""
    manifest = recorded_manifest(root)
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


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader or a crash sees the old content or the new, never half."""
    with published(path, sync=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_sources(root: Path, sources: list[str]) -> None:
    path = root / SOURCES_FILE
    text = json.dumps(sources, indent=1, ensure_ascii=False)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass  # missing or damaged: written anew
    write_atomic(path, text)
