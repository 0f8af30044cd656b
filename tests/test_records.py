"""Many articles in one file: .jsonl, .json and .csv records (each also gzipped), as a user indexes and asks them."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from rag import RAG
from rag.bench.rtqa_data import Page, write_corpus
from rag.cli import main
from rag.index.reader import Index
from rag.index.writer import build
from rag.ingest.chunking import chunk_document
from rag.ingest.corpus import load_document, load_documents, read_text

RECORDS = [
    {
        "id": "harbour-1",
        "title": "Storm closes Velmar harbour",
        "date": "2024-03-02T08:15:00Z",
        "url": "https://gazette.example/velmar-storm",
        "outlet": "Harbour Gazette",
        "authors": ["Ann Lee", "Bo Kim"],
        "text": "A winter storm closed the Velmar harbour on Saturday morning.\n"
        "Ferries to the Tarn islands were cancelled until Monday, the port authority said.",
    },
    {
        "id": "tram-2",
        "title": "Orvin approves tram line",
        "date": "2024-02-20",
        "url": "https://citywire.example/orvin-tram",
        "outlet": "City Wire",
        "text": "The Orvin city council approved a new tram line on Tuesday.\n"
        "Construction of the eleven-kilometre line starts in June and costs 240 million euros.",
    },
    {
        "id": "cherry-3",
        "title": "Earliest cherry harvest in forty years",
        "date": "2024-04-11",
        "url": "https://farmnews.example/dresk-cherries",
        "outlet": "Farm News",
        "text": "Farmers in the Dresk valley picked the earliest cherry harvest in forty years, the growers' cooperative said.\n"
        "A warm March brought the trees into bloom three weeks early.",
    },
    {
        "id": "library-4",
        "title": "Kelso library reopens",
        "date": "2024-01-15",
        "url": "https://kelso.example/library",
        "outlet": "Kelso Courier",
        "text": "The Kelso public library reopened after a two-year renovation.\n"
        "Its new reading room seats three hundred people and stays open until midnight.",
    },
]
FERRY_Q = "Until when were the ferries to the Tarn islands cancelled?"


def jsonl(records: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def csv_text(records: list[dict]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "title", "date", "url", "outlet", "author", "text"])
    for r in records:
        w.writerow([r["id"], r["title"], r["date"], r["url"], r["outlet"], ", ".join(r.get("authors", [])), r["text"]])
    return "\ufeff" + out.getvalue()  # as Excel saves it: a byte-order mark first


def rag(capsys, *args: str) -> tuple[int, str, list[str]]:
    """Run the `rag` command; its exit code, stdout and stderr lines."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


# ---------------------------------------------------------------- formats
def test_a_jsonl_archive_is_indexed_asked_and_cited_exactly(tmp_path, capsys):
    archive = tmp_path / "archive.jsonl"
    archive.write_text(jsonl(RECORDS), encoding="utf-8")
    idx = str(tmp_path / "idx")
    code, out, err = rag(capsys, "index", str(archive), "--index", idx)
    assert code == 0 and not err and "4 added" in out

    code, out, _ = rag(capsys, "list", "--index", idx)
    assert "archive.jsonl#harbour-1" in out and "Storm closes Velmar harbour" in out and "2024-03-02" in out

    code, out, _ = rag(capsys, "ask", FERRY_Q, "--llm", "extractive", "--json", "--index", idx)
    answer = json.loads(out)
    assert code == 0 and not answer["abstained"] and "Monday" in answer["answer"]
    cited = [c for c in answer["citations"] if c["source_file"] == "archive.jsonl#harbour-1"]
    assert cited
    for c in cited:
        # the spans point into the record's own text, as they point into an article file's
        assert RECORDS[0]["text"][c["start"] : c["end"]] == c["quote"]
        assert (c["title"], c["outlet"], c["date"]) == ("Storm closes Velmar harbour", "Harbour Gazette", "2024-03-02")

    code, out, _ = rag(capsys, "ask", FERRY_Q, "--llm", "extractive", "--index", idx)
    assert "[1] archive.jsonl#harbour-1: Storm closes Velmar harbour (Harbour Gazette, 2024-03-02) chars" in out

    from ui import render

    r = RAG.open(idx)
    a = r.ask(FERRY_Q, llm="extractive")
    c = a.citations[0]
    assert r.index.raw(c.source_file)[c.start : c.end] == c.quote
    html = render.citation_html(a, 0, c.n, r.index.docs)
    for shown in ("Storm closes Velmar harbour", "Harbour Gazette", "2024-03-02", "by Ann Lee, Bo Kim", "archive.jsonl#harbour-1"):
        assert shown in html


def test_csv_json_and_gzip_files_give_the_same_articles(tmp_path):
    d = tmp_path / "formats"
    d.mkdir()
    (d / "a.csv").write_text(csv_text(RECORDS), encoding="utf-8")
    (d / "b.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    (d / "c.json.gz").write_bytes(gzip.compress(json.dumps({"status": "ok", "articles": RECORDS}).encode()))
    (d / "d.jsonl.gz").write_bytes(gzip.compress(jsonl(RECORDS).encode()))
    (d / "e.csv.gz").write_bytes(gzip.compress(csv_text(RECORDS).encode()))
    loaded = load_documents([d])
    assert not loaded.errors
    by_file: dict[str, dict] = {}
    for doc in loaded.documents:
        name, _, key = doc.id.partition("#")
        by_file.setdefault(name, {})[key] = (doc.title, doc.outlet, doc.date, doc.author, doc.url, doc.text, doc.segments)
    assert set(by_file) == {"a.csv", "b.json", "c.json.gz", "d.jsonl.gz", "e.csv.gz"}
    first = by_file["a.csv"]
    assert set(first) == {"harbour-1", "tram-2", "cherry-3", "library-4"}
    assert all(v == first for v in by_file.values())
    assert first["harbour-1"][:4] == ("Storm closes Velmar harbour", "Harbour Gazette", "2024-03-02", "Ann Lee, Bo Kim")

    report = build(tmp_path / "idx", [d / "e.csv.gz"])
    assert not report.errors and sorted(report.added) == sorted(f"e.csv.gz#{r['id']}" for r in RECORDS)


def test_html_in_a_record_is_cleaned_as_an_html_file_is(tmp_path):
    page = (
        "<html><head><title>Orvin approves tram line</title></head><body><nav>Home | World | Sport</nav>"
        "<p>The Orvin city council approved a new tram line on Tuesday.</p>"
        "<p>Construction starts in June and costs 240 million euros.</p><footer>© City Wire</footer></body></html>"
    )
    (tmp_path / "page.html").write_text(page, encoding="utf-8")
    (tmp_path / "pages.jsonl").write_text(jsonl([{"id": "p1", "text": page}]), encoding="utf-8")
    as_file = load_document(tmp_path / "page.html")
    (as_record,) = load_documents([tmp_path / "pages.jsonl"]).documents
    assert as_record.text == as_file.text and as_record.segments == as_file.segments
    assert "<p>" not in as_record.text and "Home | World" not in as_record.text and as_record.title == "Orvin approves tram line"
    chunk = chunk_document(as_record, page)[0]
    s = chunk.sentences[0]
    assert page[s.start : s.end] == "The Orvin city council approved a new tram line on Tuesday."


def test_record_ids_come_from_id_then_url_then_text_and_stay_readable(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        jsonl(
            [
                {"guid": 17, "text": "The Kelso public library reopened after a two-year renovation."},
                {"link": "https://kelso.example/news/library", "body": "Its new reading room seats three hundred people."},
                {"content": "Farmers in the Dresk valley picked the earliest cherry harvest in forty years."},
                {"uuid": "evil\n\u202eid with spaces#1", "maintext": "A warm March brought the trees into bloom three weeks early."},
            ]
        ),
        encoding="utf-8",
    )
    ids = [d.id for d in load_documents([f]).documents]
    assert ids[:2] == ["mixed.jsonl#17", "mixed.jsonl#https://kelso.example/news/library"]
    assert ids[2].startswith("mixed.jsonl#text-")
    odd = ids[3]
    assert odd.startswith("mixed.jsonl#evil-id-with-spaces-1~") and odd.isascii() and odd.isprintable() and " " not in odd
    assert ids == [d.id for d in load_documents([f]).documents]  # stable from one load to the next


# ---------------------------------------------------------------- bad input
def test_malformed_lines_are_reported_by_line_and_the_rest_is_indexed(tmp_path, capsys):
    f = tmp_path / "archive.jsonl"
    lines = [
        RECORDS[0],
        RECORDS[1],
        '{"id": "broken", "text": "cut off',
        '["not", "an", "object"]',
        {"id": "empty-5", "title": "No text here", "text": "   "},
        {**RECORDS[0], "text": "A later copy with the same id."},
        RECORDS[2],
        RECORDS[3],
    ]
    f.write_text(jsonl(lines), encoding="utf-8")
    rows = tmp_path / "rows.csv"
    rows.write_text('id,title,text\nr1,Kelso,"The Kelso library reopened, the council said."\nr2,Bad,one,two,three\n', encoding="utf-8")
    idx = str(tmp_path / "idx")
    code, out, err = rag(capsys, "index", str(f), str(rows), "--index", idx)
    assert code == 1 and "5 added" in out
    assert err == [
        "5 errors:",
        "error: skipped archive.jsonl line 3: bad JSON (Unterminated string starting at column 26)",
        "error: skipped archive.jsonl line 4: a JSON array, not an object with the article's fields",
        "error: skipped archive.jsonl line 5: no text (nothing in its fields text, body, content, article, maintext)",
        "error: skipped archive.jsonl line 6: same id as line 1 (harbour-1); kept the first",
        "error: skipped rows.csv line 3: 5 columns, the header has 3 (a comma outside quotes?)",
    ]
    docs = Index.open(idx).docs
    assert sorted(docs) == sorted([*(f"archive.jsonl#{r['id']}" for r in RECORDS), "rows.csv#r1"])
    assert docs["archive.jsonl#harbour-1"].text.startswith("A winter storm")  # the first of the two, not the copy


def test_unknown_field_is_one_line_and_a_field_map_is_remembered(tmp_path, capsys):
    f = tmp_path / "feed.jsonl"
    f.write_text(
        jsonl([{"ref": f"r{i}", "story": r["text"], "when": r["date"], "paper": r["outlet"], "headline": r["title"]} for i, r in enumerate(RECORDS)]),
        encoding="utf-8",
    )
    idx = str(tmp_path / "idx")
    code, out, err = rag(capsys, "index", str(f), "--index", idx, "--fields", "text=story,date=when,outlet=paper,id=ref")
    assert code == 0 and not err and "4 added" in out
    opened = Index.open(idx)
    doc = opened.docs["feed.jsonl#r0"]
    assert (doc.title, doc.outlet, doc.date) == ("Storm closes Velmar harbour", "Harbour Gazette", "2024-03-02")
    assert json.loads((Path(idx) / "sources.json").read_text()) == [
        {"path": str(f.resolve()), "fields": {"text": "story", "date": "when", "outlet": "paper", "id": "ref"}}
    ]

    code, out, err = rag(capsys, "index", "--index", idx)  # a plain sync reads the file the same way
    assert code == 0 and not err and "4 unchanged" in out and "(0 embedded)" in out

    code, out, err = rag(capsys, "index", str(f), "--index", idx, "--fields", "text=bdy")
    assert code == 1 and len(err) == 2 and err[0] == "1 error:"
    assert err[1].startswith('error: skipped feed.jsonl: no record has the field "bdy" (--fields text=bdy); its records have: ref, story, when')
    assert Index.open(idx).gen == opened.gen  # nothing changed
    code, _, err = rag(capsys, "index", str(f), "--index", idx, "--fields", "txt=story")
    assert code == 1 and err == ["error: --fields: no field called 'txt'; the fields are text, title, date, url, outlet, author, id"]

    code, out, err = rag(capsys, "index", "--index", idx)  # the map that worked is still the one remembered
    assert code == 0 and "4 unchanged" in out


def test_bad_input_never_loses_indexed_records(tmp_path):
    f = tmp_path / "archive.jsonl.gz"
    data = jsonl(RECORDS).encode()
    f.write_bytes(gzip.compress(data))
    idx = tmp_path / "idx"
    build(idx, [f])
    everything = set(Index.open(idx).docs)

    f.write_bytes(gzip.compress(data)[:60])  # cut short: the file cannot be read to its end
    report = build(idx, [f])
    assert any(e.startswith("archive.jsonl.gz: gzip data is corrupt or cut short") and "kept its 4 records" in e for e in report.errors)
    assert set(Index.open(idx).docs) == everything

    broken = [RECORDS[0], "{this line is not JSON", RECORDS[2], RECORDS[3]]  # which record line 2 was, nobody can tell
    f.write_bytes(gzip.compress(jsonl(broken).encode()))
    report = build(idx, [f])
    assert report.errors[0].startswith("archive.jsonl.gz line 2: bad JSON")
    assert "kept the last indexed version of 1 record indexed earlier" in report.errors[1]
    assert set(Index.open(idx).docs) == everything and not report.removed

    emptied = [RECORDS[0], {**RECORDS[1], "text": ""}, RECORDS[2], RECORDS[3]]
    f.write_bytes(gzip.compress(jsonl(emptied).encode()))
    report = build(idx, [f])
    assert report.errors[0].startswith("archive.jsonl.gz line 2: no text") and not report.removed
    assert "Orvin" in Index.open(idx).raw("archive.jsonl.gz#tram-2")


# ---------------------------------------------------------------- incremental sync
def test_a_rebuild_keeps_the_records_of_a_file_that_fails_and_they_still_answer(tmp_path):
    f = tmp_path / "archive.jsonl"
    f.write_text(jsonl(RECORDS))
    idx = tmp_path / "idx"
    build(idx, [f])
    before = Index.open(idx)
    broken = [RECORDS[0], "{this line is not JSON", RECORDS[2], RECORDS[3]]  # which record line 2 was, nobody can tell
    f.write_text(jsonl(broken))
    report = build(idx, [f], rebuild=True)
    assert report.errors[0].startswith("archive.jsonl line 2: bad JSON")
    assert report.errors[1] == "archive.jsonl: kept the last indexed version of 1 record indexed earlier that did not load this time (archive.jsonl#tram-2)"
    after = Index.open(idx)
    assert set(after.docs) == set(before.docs) and report.embedded_chunks == report.n_chunks
    tram = "archive.jsonl#tram-2"
    assert after.raw(tram) == before.raw(tram)
    assert [c.text for c in after.chunks if c.doc_id == tram] == [c.text for c in before.chunks if c.doc_id == tram]
    assert any("eleven-kilometre line" in c.text for c in after.chunks)


def test_a_sync_reembeds_only_the_changed_record_and_drops_a_removed_one(tmp_path):
    f = tmp_path / "archive.jsonl"
    f.write_text(jsonl(RECORDS), encoding="utf-8")
    idx = tmp_path / "idx"
    first = build(idx, [f])
    assert first.embedded_chunks == first.n_chunks == 4

    again = build(idx, [f])
    assert again.embedded_chunks == 0 and len(again.unchanged) == 4

    changed = [dict(r) for r in RECORDS[:3]]
    changed[1]["text"] += "\nThe first trams will run in 2027."
    f.write_text(jsonl(changed), encoding="utf-8")
    report = build(idx, [f])
    assert report.updated == ["archive.jsonl#tram-2"] and report.removed == ["archive.jsonl#library-4"]
    assert sorted(report.unchanged) == ["archive.jsonl#cherry-3", "archive.jsonl#harbour-1"]
    assert report.embedded_chunks == 1  # the changed record's one passage, nothing else
    opened = Index.open(idx)
    assert "archive.jsonl#library-4" not in opened.docs
    assert opened.raw("archive.jsonl#tram-2") == changed[1]["text"]


# ---------------------------------------------------------------- the RealTime QA benchmark's two corpus formats
def test_pages_written_as_files_and_as_one_jsonl_give_the_same_chunks_and_metadata(tmp_path):
    pages = {
        "https://www.gazette.example/velmar-storm": Page(
            "https://www.gazette.example/velmar-storm",
            "Storm closes Velmar harbour\r\nMarch 2, 2024\r\nA winter storm closed the Velmar harbour on Saturday morning. "
            "Ferries to the Tarn islands were cancelled until Monday, the port authority said.\r\nShare this article\r\n",
            "Storm closes Velmar harbour",
            "2024-03-02",
            ["Ann Lee", "Bo Kim", "Cy Doe", "Di Roe"],
        ),
        "https://citywire.example/orvin-tram": Page(
            "https://citywire.example/orvin-tram",
            "The Orvin city council approved a new tram line on Tuesday.\n\nConstruction starts in June and costs 240 million euros.",
            None,
            None,
            [],
        ),
        "https://farmnews.example/dresk": Page(
            "https://farmnews.example/dresk",
            "Farmers in the Dresk valley picked the earliest cherry harvest in forty years, the growers' cooperative said.",
            "Earliest cherry harvest",
            "2024-04-11",
            ["Ed Poe"],
        ),
        "https://copy.example/dresk": Page(
            "https://copy.example/dresk",
            "Farmers in the Dresk valley picked the earliest cherry harvest in forty years, the growers' cooperative said.",
            None,
            None,
            [],
        ),
    }
    files, records = tmp_path / "files", tmp_path / "jsonl"
    file_ids = write_corpus(pages, files)
    record_ids = write_corpus(pages, records, "jsonl")
    assert sorted(p.name for p in records.iterdir()) == ["pages.jsonl"]
    from_files, from_records = load_documents([files]), load_documents([records])
    assert not from_files.errors and not from_records.errors
    a = {d.id: d for d in from_files.documents}
    b = {d.id: d for d in from_records.documents}
    assert len(a) == len(b) == len(pages)
    same_id = {file_ids[u]: record_ids[u] for u in pages}
    for url in pages:
        x, y = a[file_ids[url]], b[record_ids[url]]
        for name in ("title", "outlet", "author", "date", "url", "segments", "text", "content_hash"):
            assert getattr(x, name) == getattr(y, name), (url, name)
        assert same_id.get(x.duplicate_of) == y.duplicate_of
        chunks_x = chunk_document(x, read_text(Path(x.path), 5_000_000), 600)
        chunks_y = chunk_document(y, from_records.raws[y.id], 600)
        assert [c.text for c in chunks_x] == [c.text for c in chunks_y]
    assert b[record_ids["https://www.gazette.example/velmar-storm"]].author == "Ann Lee, Bo Kim, Cy Doe"


@pytest.mark.parametrize("name", ["notes.json", "data.csv"])
def test_a_record_file_with_no_text_field_is_one_line(tmp_path, name):
    f = tmp_path / name
    f.write_text('[{"a": 1, "b": 2}]' if name.endswith(".json") else "a,b\n1,2\n3,4\n", encoding="utf-8")
    loaded = load_documents([f])
    assert not loaded.documents
    assert loaded.errors == [
        f"{name}: no record has a text field (text, body, content, article, maintext); its records have: a, b; name it with --fields text=NAME"
    ]
