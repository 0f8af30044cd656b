"""Writing the index: sync, add, remove and compact, each one atomic generation swap.

A write adds a segment beside the live ones, publishes a new generation and then swaps
``CURRENT`` with ``os.replace``: a reader, or a crash at any point, sees the old index or the new
one. With ``Settings.ray`` the articles it reads are loaded, chunked, embedded and written as
segments on a Ray cluster (:mod:`rag.index.distributed`).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from ..ingest import records
from ..settings import Settings
from ..types import Document, RagError
from . import distributed, embedding, segments
from .layout import (
    FETCHED_DIR,
    FORMAT_VERSION,
    Manifest,
    SegmentRef,
    current_or_none,
    generations,
    read_sources,
    save_sources,
    setup_of,
    write_atomic,
    writer_lock,
)
from .plan import (
    Sources,
    UpdateReport,
    last_indexed,
    load_sources,
    make_plan,
    read_changed,
    reusable,
    segment_data,
    without,
    write_fresh_segment,
)


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
    folder must not empty the index. ``feeds``: feed URLs (already polled by :mod:`rag.ingest.feeds`)
    to record among the sources. ``fields``: the field map for the record files of the given
    paths; without it, each source's recorded map (or the default names) is used.
    """
    settings = settings or Settings.from_env()
    embedding.configure(settings)
    root = Path(root)
    field_map = records.parse_fields(fields) or None
    if field_map and remove is not None:
        raise RagError("--fields is for reading record files; `rag index remove` reads none")
    t0 = time.perf_counter()
    report = UpdateReport()
    with writer_lock(root):
        if settings.ray and not compact and remove is None:
            distributed.connect(settings.ray, progress)
        live = reusable(root, settings, rebuild)
        old_docs = dict(live.docs) if live else {}
        recorded, recorded_fields = read_sources(root)
        sources = Sources(list(recorded), dict(recorded_fields))
        if compact:
            new_docs, fresh_raws = dict(old_docs), {}
        elif remove is not None:
            new_docs, fresh_raws = without(old_docs, remove), {}
        else:
            # built anew (a rebuild, another embedder): a file that fails to load now still keeps its last version
            last = live or last_indexed(root)
            new_docs, fresh_raws = load_sources(root, settings, old_docs, sources, report, sync, add, feeds, field_map, allow_remove, last)
            read_changed(new_docs, old_docs, fresh_raws, settings, report)
        plan = make_plan(live, old_docs, new_docs, settings, report, whole=compact)
        report.removed = sorted(set(old_docs) - set(new_docs))
        if plan.nothing_to_do(live):
            report.n_chunks = live.n_chunks(plan.refs) if live else 0
            if sources.paths:  # the same articles may come from a new place, or an older index has no sources.json yet
                save_sources(root, sources.entries())
        else:
            written, n_written, embedded_written = [], 0, 0
            if settings.ray and plan.fresh:
                # the articles read now are chunked, embedded and written as segments by the cluster's
                # workers; what this write takes over from old segments (their vectors stored) stays here
                fresh = [plan.write[i] for i in sorted(plan.fresh)]
                written, n_written, embedded_written = distributed.write_segments(root, fresh, fresh_raws, settings, write_fresh_segment)
                plan = replace(plan, write={i: d for i, d in plan.write.items() if i not in plan.fresh}, fresh=set())
            try:
                data = segment_data(plan, live, fresh_raws, settings, progress, report)
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


def _new_manifest(settings: Settings, sources: Sources, n_chunks: int) -> Manifest:
    embedder, precision, dim, chunker = setup_of(settings)
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
    sources: Sources,
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
            save_sources(root, sources.entries())
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


def fault_point(name: str) -> None:
    """Crash-test hook: ``RAG_FAULT=<name>`` kills the process here, as a power cut would."""
    if os.environ.get("RAG_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _write_generation(root: Path, manifest: Manifest) -> None:
    """Publish ``manifest`` as the next generation, make it live, and delete what no kept generation uses."""
    cur = root / "CURRENT"
    prev = current_or_none(root)
    # past every generation on disk: one a killed writer published but never made current is an orphan
    n = max([int(g.name[4:]) for g in generations(root)], default=0) + 1
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
    write_atomic(cur, name)
    # older generations are garbage once CURRENT moved; keep the previous one for readers mid-open
    for old in sorted(root.glob("gen-*")):
        if old.name not in (name, prev):
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # likewise the segments only those generations listed, and the folders of killed writers
    kept = {r.name for g in (name, prev) if g for r in Manifest.read(root / g).segments}
    segments.remove_unlisted(root, kept)
