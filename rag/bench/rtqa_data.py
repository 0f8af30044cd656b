"""The RealTime QA data as the benchmark reads it: quiz questions, gold and search-result pages, one corpus file per page."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ..text import parse_date
from ..types import RagError

# the gold "article" of some questions is a video player's ad-feedback form, not text anyone could retrieve
_AD_FORM = re.compile(r"How relevant is this ad to you\?")
MIN_GOLD_CHARS = 400


@dataclass
class QuizQuestion:
    id: str
    date: str  # ISO, the day the quiz was published: the question's "as of"
    question: str
    choices: list[str]
    answer: int | None  # index into choices
    gold_urls: list[str] = field(default_factory=list)
    excluded: str | None = None  # why the question's gold article cannot count, if it cannot
    search_urls: list[str] = field(default_factory=list)  # the question's own web-search result pages (with text)


@dataclass
class Page:
    url: str
    text: str
    title: str | None
    date: str | None
    authors: list[str]


@dataclass
class Dataset:
    questions: list[QuizQuestion]  # every question of the weeks read
    pages: dict[str, Page]  # url -> page, every gold and search-result page with text
    weeks: list[str]

    @property
    def gold_questions(self) -> list[QuizQuestion]:
        return [q for q in self.questions if q.gold_urls]

    @property
    def scored_questions(self) -> list[QuizQuestion]:
        return [q for q in self.gold_questions if not q.excluded]


def read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise RagError(f"{path}: not readable as JSON lines ({exc})") from exc


def load_dataset(data: str | Path, weeks: list[str] | None = None) -> Dataset:
    """Read ``<data>/weeks/<date>_{qa,gold,gcs}.jsonl`` (or ``<data>/<date>_...``)."""
    root = Path(data)
    folder = root / "weeks" if (root / "weeks").is_dir() else root
    qa_files = sorted(folder.glob("*_qa.jsonl"))
    if not qa_files:
        raise RagError(f"no RealTime QA weeks found under {root} (expected weeks/<date>_qa.jsonl)")
    all_weeks = [p.name.split("_")[0] for p in qa_files]
    if weeks:
        unknown = sorted(set(weeks) - set(all_weeks))
        if unknown:
            raise RagError(f"no such week(s) in {root}: {', '.join(unknown)} (have {all_weeks[0]} … {all_weeks[-1]})")
        qa_files = [p for p in qa_files if p.name.split("_")[0] in weeks]
    questions: list[QuizQuestion] = []
    pages: dict[str, Page] = {}
    gold_pages: dict[str, Page] = {}
    for qa in qa_files:
        week = qa.name.split("_")[0]
        gold = (
            {r["question_id"]: r.get("search_result") or [] for r in read_jsonl(folder / f"{week}_gold.jsonl")}
            if (folder / f"{week}_gold.jsonl").exists()
            else {}
        )
        gcs = (
            {r["question_id"]: r.get("search_result") or [] for r in read_jsonl(folder / f"{week}_gcs.jsonl")}
            if (folder / f"{week}_gcs.jsonl").exists()
            else {}
        )
        for r in read_jsonl(qa):
            qid = r["question_id"]
            with_text = [g for g in gold.get(qid, []) if (g.get("text") or "").strip()]
            q = QuizQuestion(
                id=qid,
                date=parse_date(r.get("question_date") or "") or "",
                question=r["question_sentence"].strip(),
                choices=list(r.get("choices") or []),
                answer=int(r["answer"][0]) if r.get("answer") else None,
                gold_urls=[g["url"] for g in with_text],
                search_urls=[s["url"] for s in gcs.get(qid, []) if (s.get("text") or "").strip()],
            )
            if with_text and all(len(g["text"].strip()) < MIN_GOLD_CHARS for g in with_text):
                ad = any(_AD_FORM.search(g["text"]) for g in with_text)
                q.excluded = (
                    "gold page is a video player's ad-feedback form, no article text"
                    if ad
                    else f"gold page text under {MIN_GOLD_CHARS} characters"
                )
            questions.append(q)
            for g in with_text:
                gold_pages.setdefault(g["url"], _page(g))
            for s in gcs.get(qid, []):
                if (s.get("text") or "").strip():
                    pages.setdefault(s["url"], _page(s))
    for url, g in gold_pages.items():
        # the gold copy of a page is the article as the data set's authors extracted it; the search
        # copy of the same url is sometimes only the ad form. Keep the longer text, and the title.
        s = pages.get(url)
        if s is None or len(g.text) >= len(s.text):
            g.title = g.title or (s.title if s else None)
            pages[url] = g
    return Dataset(questions, pages, sorted({q.id.split("_")[0] for q in questions}))


def _page(r: dict) -> Page:
    return Page(
        url=r["url"], text=r["text"], title=(r.get("title") or None), date=parse_date(r.get("publish_date") or ""), authors=list(r.get("authors") or [])
    )


# ---------------------------------------------------------------- corpus files
CORPUS_FORMATS = ("files", "jsonl")
PAGES_FILE = "pages.jsonl"


def page_meta(url: str, p: Page) -> dict[str, str]:
    """What the corpus states of a page besides its text: title, date, url, site, the first three authors."""
    site = urlparse(url).netloc.removeprefix("www.")
    return {
        k: v for k, v in (("title", p.title), ("date", p.date), ("url", url), ("outlet", site), ("author", ", ".join(p.authors[:3]))) if v
    }


def write_corpus(pages: dict[str, Page], folder: Path, corpus_format: str = "files") -> dict[str, str]:
    """Write the pages into ``folder``; returns url -> document id.

    ``files``: each page as ``NNNNN.txt`` plus ``.meta.json``. ``jsonl``: all of them as the
    records of one ``pages.jsonl`` (id NNNNN, title, date, url, outlet, author, text), whose
    documents are ``pages.jsonl#NNNNN``. Unchanged files are not rewritten, so re-running the
    benchmark over a kept index re-embeds nothing.
    """
    if corpus_format not in CORPUS_FORMATS:
        raise RagError(f"corpus format {corpus_format!r}: use one of {', '.join(CORPUS_FORMATS)}")
    folder.mkdir(parents=True, exist_ok=True)
    ids: dict[str, str] = {}
    wanted: dict[str, str] = {}  # file name -> content
    lines: list[str] = []
    for n, url in enumerate(sorted(pages)):
        p = pages[url]
        meta = page_meta(url, p)
        if corpus_format == "jsonl":
            ids[url] = f"{PAGES_FILE}#{n:05d}"
            # authors as the list the data has: the record reader joins them as the sidecar has them
            record = {"id": f"{n:05d}", **meta, "author": p.authors[:3], "text": p.text}
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            name = f"{n:05d}.txt"
            ids[url] = name
            wanted[name] = p.text
            wanted[f"{name}.meta.json"] = json.dumps(meta, ensure_ascii=False, indent=1)
    if corpus_format == "jsonl":
        wanted[PAGES_FILE] = "".join(lines)
    for name, content in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
    for stale in folder.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    return ids


def read_corpus(folder: Path) -> list[tuple[str, str, dict]]:
    """The pages :func:`write_corpus` wrote, in either format, as (document id, text, metadata)."""
    if (folder / PAGES_FILE).is_file():
        out = []
        with open(folder / PAGES_FILE, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                meta = {k: v for k, v in r.items() if k not in ("id", "text")}
                out.append((f"{PAGES_FILE}#{r['id']}", r["text"], meta))
        return out
    return [
        (path.name, path.read_text(encoding="utf-8"), json.loads(path.with_name(path.name + ".meta.json").read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.txt"))
    ]
