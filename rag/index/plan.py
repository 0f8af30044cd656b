"""The stages of an update: which sources to read, which articles changed, which segments merge, and what to embed."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..ingest.chunking import chunk_document
from ..ingest.corpus import LoadError, LoadResult, iter_article_files, load_document, load_files, read_text
from ..ingest.dedup import affected, mark_duplicates, sample, shingles
from ..settings import Settings
from ..types import Chunk, Document, RagError
from . import distributed, embedding, segments
from .embedding import embed_text
from .layout import (
    FETCHED_DIR,
    FORMAT_VERSION,
    Manifest,
    SegmentRef,
    current_name,
    current_or_none,
    is_url,
    rebuild_hint,
    recorded_ids,
    recorded_manifest,
    setup_of,
    source_entries,
)


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


# ---------------------------------------------------------------- the stages of an update
@dataclass
class Sources:
    """The files, folders and feeds an index is built from, each record file's path with its field map."""

    paths: list[str]
    fields: dict[str, dict[str, str]]

    def entries(self) -> list:
        return source_entries(self.paths, self.fields)


def reusable(root: Path, settings: Settings, rebuild: bool) -> _Live | None:
    """The live index when its chunks and vectors can be reused, None when everything is built anew."""
    if rebuild or recorded_manifest(root).format_version != FORMAT_VERSION:
        return None  # another format is simply rebuilt
    live = _Live.open(root)  # a corrupt index raises
    # a different embedder or chunker: everything is re-embedded
    return live if live.manifest.setup() == setup_of(settings) else None


def last_indexed(root: Path) -> _Live | None:
    """The live generation as it is, when it opens: what a rebuild keeps of a file that fails to load now.

    None for a new index, or one too damaged to open: a rebuild then builds from the files alone.
    """
    if current_or_none(root) is None:
        return None
    try:
        return _Live.open(root)
    except RagError:
        return None


def without(old_docs: dict[str, Document], names: Iterable[str]) -> dict[str, Document]:
    dropped = _removal(old_docs, names)
    return {k: v for k, v in old_docs.items() if k not in dropped}


def load_sources(
    root: Path,
    settings: Settings,
    old_docs: dict[str, Document],
    sources: Sources,
    report: UpdateReport,
    sync: Iterable[str | Path] | None,
    add: Iterable[str | Path] | None,
    feeds: Iterable[str],
    field_map: dict[str, str] | None,
    allow_remove: bool,
    last: _Live | None = None,
) -> tuple[dict[str, Document], dict[str, str]]:
    """Load and clean the articles of a sync or an add: the documents to index, and records' raw texts.

    Notes the load errors in ``report`` and what was indexed from where in ``sources``. ``last``:
    the live generation when ``old_docs`` is empty only because everything is built anew (a
    rebuild): a file that fails to load keeps its version from there, re-chunked from the text it
    was indexed from (returned with the records' raw texts).
    """
    # feeds are polled by rag.ingest.feeds before an update; here they are only kept on record, and
    # a sync of named folders keeps them and the pages fetched: those are the index's own
    followed = list(dict.fromkeys(s for s in (*sources.paths, *feeds) if is_url(s)))
    paths = _given_paths(root, sources.paths, sync, add)
    listed, maps, loaded = _load_paths(paths, settings, field_map, sources.fields)
    new_docs = {d.id: d for d in loaded.documents}
    indexed = last.docs if last is not None and not old_docs else old_docs
    raws, errors = loaded.raws, loaded.errors
    if add is not None:
        new_docs = {**old_docs, **new_docs}
        kept: list[str] = []
    else:
        kept = _keep_unloadable(indexed, new_docs, {f.name for files in listed.values() for f in files}, loaded.failed)
        if not allow_remove:
            _refuse_mass_removal(set(old_docs) or recorded_ids(root), set(new_docs))
        if indexed is not old_docs and kept:
            stored, errors = _stored_raws(last, kept, new_docs, errors)
            kept = [i for i in kept if i in stored]
            raws = {**stored, **raws}
    report.errors = _note_kept(errors, kept, indexed)
    _remember_sources(sources, listed, maps, loaded.documents, new_docs, added=add is not None)
    sources.paths = [*(s for s in sources.paths if not is_url(s)), *followed]
    return new_docs, raws


def _stored_raws(
    live: _Live, kept: list[str], new_docs: dict[str, Document], errors: list[LoadError]
) -> tuple[dict[str, str], list[LoadError]]:
    """The texts the live segments hold for the articles a rebuild keeps, and the load errors.

    A rebuild chunks a kept article again, and its file is what failed: the text it was indexed
    from is the one its offsets refer to. One whose stored text cannot be read is not kept (it is
    taken out of ``new_docs``), with a line saying so.
    """
    by_segment: dict[str, set[str]] = {}
    for i in kept:
        by_segment.setdefault(live.home[i], set()).add(i)
    stored: dict[str, str] = {}
    for name, ids in by_segment.items():
        try:
            stored.update(segments.read_raws(live.folder(name), ids))
        except (OSError, ValueError, KeyError) as exc:
            where = str(live.folder(name) / "raw.jsonl")
            errors = [*errors, LoadError(where, f"cannot be read ({type(exc).__name__}); the last indexed versions it holds are not kept")]
    for i in kept:
        if i not in stored:
            del new_docs[i]
    return stored, errors


READ_TRIES = 3  # reads of a file that changes while it is indexed, before it waits for the next update


def read_changed(
    new_docs: dict[str, Document], old_docs: Mapping[str, Document], raws: dict[str, str], settings: Settings, report: UpdateReport
) -> None:
    """Put in ``raws`` the text of each article file to chunk now, the very text its document was cleaned from.

    The loader read each file to clean and hash it; chunking cuts the text again at the offsets
    cleaning found, so a file saved in between (an editor, a crawler writing into the folder) would
    be cut at another version's offsets, and one emptied or garbled in between would stop the
    whole update. A file that changed is loaded again, up to READ_TRIES times, until a load and
    the read after it agree; one that keeps changing or can no longer be read keeps its last
    indexed version (or, new, waits for the next update), with one line naming it.
    """
    for i, d in list(new_docs.items()):
        old = old_docs.get(i)
        if d.record is not None or i in raws or (old is not None and (d is old or _own(d) == _own(old))):
            continue  # a record's text came with it, and an unchanged article's passages are reused
        doc, problem = d, f"kept changing while being indexed (read {READ_TRIES} times)"
        for _ in range(READ_TRIES):
            try:
                raw = read_text(Path(doc.path), settings.max_file_bytes)
                if hashlib.sha256(raw.encode("utf-8")).hexdigest() == doc.content_hash:
                    new_docs[i], raws[i], problem = doc, raw, ""
                    break
                doc = load_document(doc.path, settings.max_file_bytes)  # saved since it was loaded: load that version
            except RagError as exc:
                problem = f"changed while being indexed, and now: {str(exc).removeprefix(f'{i}: ')}"
                break
        if not problem:
            continue
        if old is not None:
            new_docs[i] = old
            report.errors.append(LoadError(i, f"{problem}; kept the last indexed version"))
        else:
            del new_docs[i]
            report.errors.append(LoadError(i, f"{problem}; not indexed this time (the next update reads it again)"))


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
    else:  # marked by make_plan, with the kept ones
        loaded = load_files(files, settings.max_file_bytes, mark=False, fields=file_fields)
    loaded.errors = [e for _, errs in walked.values() for e in errs] + loaded.errors
    return listed, maps, loaded


def _remember_sources(
    sources: Sources,
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
        fix = rebuild_hint(root)
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


def make_plan(
    live: _Live | None, old_docs: Mapping[str, Document], new_docs: dict[str, Document], settings: Settings, report: UpdateReport, whole: bool
) -> _Plan:
    """Sort the articles into unchanged, added and updated; mark duplicates; choose what the new segment holds.

    Only the articles a change can reach are marked again (:func:`rag.ingest.dedup.affected`); an old
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


def segment_data(
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
        # a record's text, or a file's as it was read (a kept one's as it was indexed); else the file now
        raws[i] = fresh_raws[i] if d.record is not None or i in fresh_raws else read_text(Path(d.path), settings.max_file_bytes)
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

    What a cluster's worker does with its batch (:mod:`rag.index.distributed`), the same steps a local
    write takes. ``record_raws``: the raw texts of records and of the article files the update read
    (:func:`read_changed`); a file not given is read again from its path. Returns the segment's
    passages and the passages embedded.
    """
    plan = _Plan({d.id: d for d in sorted(docs, key=lambda d: d.id)}, {d.id for d in docs}, [], {}, settings.dense_chunks_per_article)
    report = UpdateReport()
    data = segment_data(plan, None, record_raws, settings, False, report)
    segments.write(folder, data)
    return sum(map(len, data.chunks.values())), report.embedded_chunks


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
