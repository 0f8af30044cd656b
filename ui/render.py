"""HTML for answers, sources and the article list: pure functions of rag's objects, no Gradio here.

Every citation marker is a ``<button class="rag-cite rag-tT rag-nN [rag-v-VIEW]">`` (turn T of
the conversation, citation N; classes, because the chat's HTML sanitizer drops ``data-*``
attributes). One document-level click listener (``CITE_JS`` in :mod:`ui.app`) sends them to
the server, which answers with :func:`citation_html` or :func:`sources_html` for the sources panel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape

from rag import ABSTAIN_TEXT, Answer, Citation, Document, Passage, display_text


@dataclass
class Turn:
    """One question of a conversation, as the UI shows it (kept per browser session in gr.State)."""

    question: str
    standalone: str | None = None  # the follow-up rewritten as a standalone question
    status: str = ""  # what is happening now, while there is no answer yet
    draft: str = ""  # streamed, unverified draft text
    answer: Answer | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # UI-side timings (the rewrite)


def esc(text: object) -> str:
    return escape("" if text is None else str(text), quote=True)


# An absolute server path inside a message (/srv/news/corpus/a.txt): visitors see its last part only.
# By hand, as no library rewrites paths inside free text. A slash after a word character, ":" or
# "/" starts no path, so URLs (http://host:8000/v1) and dates (5/4/2019) are left as they are.
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"()<>,;]+/)*([^\s/'\"()<>,;]+)/?")


def hide_paths(text: str) -> str:
    """``text`` with each absolute server path cut to its file or folder name."""
    return _SERVER_PATH.sub(lambda m: m.group(1), text)


def _ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def doc_title(doc: Document | None, fallback: str = "") -> str:
    if doc is not None and doc.title:
        return doc.title
    if doc is not None and (lead := doc.text.strip().split("\n", 1)[0].strip()):
        # an article without a headline is named by its opening words, as a news list would; never by an invented title
        return f"“{lead if len(lead) <= 90 else lead[:89].rsplit(' ', 1)[0] + '…'}” (untitled, {doc.id})"
    return f"Untitled article ({doc.id if doc is not None else fallback})"


def inherited_html(doc: Document | None) -> str:
    """"date and outlet from the copy 003.txt": metadata this article does not state itself, shown as such."""
    note = doc.inherited_note() if doc is not None else ""
    return f' <span class="rag-inherited">({esc(note)})</span>' if note else ""


def meta_line(doc: Document | None, *, author: bool = True) -> str:
    if doc is None:
        return ""
    parts = [doc.outlet or "outlet unknown", doc.date or "date unknown"]
    if author and doc.author:
        parts.append(f"by {doc.author}")
    return " · ".join(esc(p) for p in parts) + inherited_html(doc)


# ------------------------------------------------------------------ offsets
def locate(text: str, base: int | None, doc: Document, cit: Citation, raw: str | None = None) -> tuple[int, int] | None:
    """The span of ``text`` (which starts at cleaned offset ``base``) holding the citation's quote.

    ``raw`` is the article's raw text, which an HTML article needs for its offsets to map.
    """
    quote = display_text(cit.quote, doc.is_html)  # the quote is raw text: for HTML, tags and entities
    a, b = doc.clean_offset(cit.start, raw), doc.clean_offset(cit.end, raw)
    if None not in (a, b, base):
        a, b = a - base, b - base
        if 0 <= a < b <= len(text) and _ws(text[a:b]) == _ws(quote):
            return a, b
    i = text.find(quote)
    if i >= 0:
        return i, i + len(quote)
    head = quote[:60]
    i = text.find(head) if head else -1
    return (i, i + len(head)) if i >= 0 else None


def highlight(text: str, span: tuple[int, int] | None, mark_class: str = "rag-quote") -> str:
    if span is None:
        return esc(text)
    a, b = span
    return f'{esc(text[:a])}<mark class="{mark_class}">{esc(text[a:b])}</mark>{esc(text[b:])}'


# ------------------------------------------------------------------ chat messages
def cite_class(turn: int, n: int, view: str = "passage") -> str:
    return f"rag-cite rag-t{turn} rag-n{n} rag-v-{view}"


def cite_button(turn: int, c: Citation | None, n: int) -> str:
    tip = f"{c.title or c.source_file} — {c.outlet or 'outlet unknown'}, {c.date or 'date unknown'}" if c else f"source {n}"
    return f'<button type="button" class="{cite_class(turn, n)}" title="{esc(tip)}">[{n}]</button>'


_TIMINGS = [
    ("rewrite_s", "Follow-up rewrite"),
    ("retrieval_s", "Retrieval"),
    ("context_s", "Context selection"),
    ("llm_load_s", "Model load"),
    ("first_token_s", "First token (from question)"),
    ("generation_s", "Generation"),
    ("verify_s", "Verification"),
    ("total_s", "Total"),
]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def timings_html(answer: Answer, extra: Mapping[str, float]) -> str:
    t = {**answer.timings, **extra}
    rows = "".join(f"<tr><td>{label}</td><td>{t[key]:.2f} s</td></tr>" for key, label in _TIMINGS if key in t)
    total = t.get("total_s", 0.0) + t.get("rewrite_s", 0.0)
    n_src = len({c.source_file for c in answer.citations})
    summary = f"Details · {esc(answer.backend)} · {total:.1f} s · {plural(len(answer.passages), 'passage')} searched, {plural(n_src, 'article')} cited"
    return f'<details class="rag-timings"><summary>{summary}</summary><table>{rows}</table></details>'


def notes_html(answer: Answer) -> str:
    """How the sources were chosen (a date range, the "latest" rule), under the answer."""
    items = "".join(f"<li>{esc(n)}</li>" for n in answer.notes)
    return f'<ul class="rag-notes" role="note">{items}</ul>' if items else ""


def answer_body(answer: Answer, turn: int) -> str:
    return _answer_body(answer, turn) + notes_html(answer)


def _answer_body(answer: Answer, turn: int) -> str:
    if answer.abstained:
        check = f' <span class="rag-abstain-check">(the {esc(answer.abstain_check)} check)</span>' if answer.abstain_check else ""
        why = f'<div class="rag-abstain-why">Why: {esc(answer.abstain_reason)}.{check}</div>' if answer.abstain_reason else ""
        related = "".join(
            f'<li><span class="rag-related-meta">{esc(p.doc.title or p.doc.id)} · {esc(p.doc.date or "undated")}</span> '
            f"{esc(_snippet(p.chunk.text))}</li>"
            for p in answer.passages[:3]
        )
        rel = f'<details class="rag-related"><summary>Related passages, not an answer</summary><ul>{related}</ul></details>' if related else ""
        return f'<div class="rag-abstain" role="note"><span class="rag-abstain-icon">∅</span> {esc(answer.text or ABSTAIN_TEXT)}{why}</div>{rel}'
    by_n = {c.n: c for c in answer.citations}
    out = []
    for s in answer.sentences:
        marks = "".join(cite_button(turn, by_n.get(n), n) for n in s.citations)
        if s.supported:
            out.append(f'<span class="rag-sent">{esc(s.text)}{" " + marks if marks else ""}</span>')
        else:
            flag = '<span class="rag-flag" title="No source passage supports this sentence">unsupported</span>'
            out.append(f'<span class="rag-sent rag-unsupported" title="Not supported by the sources">{esc(s.text)}{" " + marks if marks else ""} {flag}</span>')
    if not out:
        out.append(f'<span class="rag-sent">{esc(answer.text)}</span>')
    audit = ""
    if answer.dropped:
        items = "".join(f"<li><q>{esc(d.text)}</q> — {esc(d.reason)}</li>" for d in answer.dropped)
        audit = f'<details class="rag-dropped"><summary>{plural(len(answer.dropped), "sentence")} of the draft left out</summary><ul>{items}</ul></details>'
    return '<p class="rag-text">' + " ".join(out) + "</p>" + audit


def _snippet(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rsplit(" ", 1)[0] + "…"


def turn_html(t: Turn, turn: int) -> str:
    parts = [f'<div class="rag-answer rag-turn{turn}">']
    if t.standalone and t.standalone != t.question:
        parts.append(f'<div class="rag-rewritten">Follow-up searched as: <q class="rag-standalone">{esc(t.standalone)}</q></div>')
    if t.answer is not None:
        parts.append(answer_body(t.answer, turn))
        parts.append(timings_html(t.answer, t.timings))
    elif t.error:
        parts.append(f'<div class="rag-error" role="alert">⚠ {esc(hide_paths(t.error))}</div>')
    else:
        if t.draft:
            parts.append(f'<div class="rag-draft"><span class="rag-status">Draft, not yet verified…</span><p>{esc(t.draft)}<span class="rag-caret">▍</span></p></div>')
        else:
            parts.append(f'<div class="rag-status rag-pending">{esc(t.status or "Working…")}</div>')
    parts.append("</div>")
    return "".join(parts)


def messages(conv: list[Turn]) -> list[dict]:
    out: list[dict] = []
    for i, t in enumerate(conv):
        out.append({"role": "user", "content": f'<span class="rag-q">{esc(t.question)}</span>'})
        out.append({"role": "assistant", "content": turn_html(t, i)})
    return out


# ------------------------------------------------------------------ sources panel
EMPTY_SOURCES = (
    '<div class="rag-sources rag-view-empty" data-view="empty"><h3 class="rag-panel-title">Sources</h3>'
    '<p class="rag-hint">Ask a question, then click a citation marker such as <span class="rag-cite-demo">[1]</span> '
    "to see the exact passage it quotes.</p></div>"
)


def _passage(answer: Answer, c: Citation) -> Passage | None:
    return next((p for p in answer.passages if p.n == c.passage), None) or next(
        (p for p in answer.passages if p.doc.id == c.source_file and p.chunk.start <= c.start and c.end <= p.chunk.end), None
    )


def _also_reported(answer: Answer, doc_id: str, docs: Mapping[str, Document]) -> str:
    ids: list[str] = []
    for p in answer.passages:
        if p.doc.id == doc_id:
            ids.extend(i for i in p.also_reported_by if i not in ids and i != doc_id)
    if not ids:
        return ""
    items = []
    for i in ids:
        d = docs.get(i)
        items.append(f"{esc(d.outlet or 'outlet unknown')}, {esc(d.date or 'date unknown')} <span class='rag-file'>({esc(i)})</span>" if d else esc(i))
    return f'<div class="rag-also">Also reported by: {"; ".join(items)}</div>'


def sources_html(answer: Answer, turn: int, docs: Mapping[str, Document]) -> str:
    """The articles an answer cites, each once, with its citation markers."""
    head = f'<h3 class="rag-panel-title">Sources</h3><div class="rag-for">for “{esc(answer.question)}”</div>'
    if answer.abstained or not answer.citations:
        why = "The sources do not answer this question, so nothing is cited." if answer.abstained else "This answer cites no passage."
        return f'<div class="rag-sources rag-view-list" data-view="list" data-turn="{turn}">{head}<p class="rag-hint">{why}</p></div>'
    groups: dict[str, list[Citation]] = {}
    for c in answer.citations:
        groups.setdefault(c.source_file, []).append(c)
    items = []
    for doc_id, cits in groups.items():
        p = _passage(answer, cits[0])
        doc = p.doc if p else docs.get(doc_id)
        rows = "".join(
            f'<li>{cite_button(turn, c, c.n)} <span class="rag-snippet">“{esc(c.quote[:160])}{"…" if len(c.quote) > 160 else ""}”</span></li>' for c in cits
        )
        items.append(
            f'<div class="rag-src-item"><div class="rag-src-title">{esc(doc_title(doc, doc_id))}</div>'
            f'<div class="rag-meta">{meta_line(doc)}</div>{_also_reported(answer, doc_id, docs)}<ul class="rag-cits">{rows}</ul></div>'
        )
    return f'<div class="rag-sources rag-view-list" data-view="list" data-turn="{turn}">{head}{"".join(items)}</div>'


def citation_html(
    answer: Answer, turn: int, n: int, docs: Mapping[str, Document], whole: bool = False, raw: Callable[[str], str] | None = None
) -> str:
    """One citation: the article's metadata and the passage (or whole article) with the quote marked.

    ``raw`` gives an article's raw text by id (``Index.raw``), which places the mark exactly in an HTML article.
    """
    c = next((c for c in answer.citations if c.n == n), None)
    if c is None:
        return sources_html(answer, turn, docs)
    p = _passage(answer, c)
    doc = p.doc if p is not None else docs.get(c.source_file)
    back = f'<button type="button" class="{cite_class(turn, 0, "list")} rag-link">← all sources of this answer</button>'
    meta = [f'<span class="rag-outlet">{esc(doc.outlet if doc else c.outlet) or "outlet unknown"}</span>',
            f'<span class="rag-date">{esc(doc.date if doc else c.date) or "date unknown"}</span>']
    if doc is not None and doc.author:
        meta.append(f'<span class="rag-author">by {esc(doc.author)}</span>')
    meta.append(f'<span class="rag-file">{esc(c.source_file)}</span>{inherited_html(doc)}')
    head = (
        f'{back}<div class="rag-src-head"><span class="rag-n">[{c.n}]</span> '
        f'<span class="rag-src-title">{esc(doc_title(doc, c.source_file))}</span></div>'
        f'<div class="rag-meta">{" · ".join(meta)}</div>{_also_reported(answer, c.source_file, docs)}'
    )
    raw_text = _raw_text(raw, doc)
    if whole and doc is not None and doc.text:
        body = highlight(doc.text, locate(doc.text, 0, doc, c, raw_text), "rag-quote rag-focus")
        box = f'<div class="rag-article" data-doc="{esc(doc.id)}">{body}</div>'
        toggle = f'<button type="button" class="{cite_class(turn, c.n, "passage")} rag-action">Show only the passage</button>'
        label = "Whole article (cleaned text); the quoted sentence is highlighted"
    else:
        if p is not None and doc is not None:
            text = p.chunk.text
            body = highlight(text, locate(text, doc.clean_offset(p.chunk.start, raw_text), doc, c, raw_text))
        else:
            body = f'<mark class="rag-quote">{esc(c.quote)}</mark>'
        box = f'<div class="rag-passage">{body}</div>'
        toggle = f'<button type="button" class="{cite_class(turn, c.n, "article")} rag-action">Show whole article</button>'
        label = f"Passage {c.passage}; the quoted span is highlighted" if c.passage else "Quoted span"
    view = "article" if whole else "passage"
    return (
        f'<div class="rag-sources rag-view-{view}" data-view="{view}" data-turn="{turn}" data-n="{c.n}" data-doc="{esc(c.source_file)}">'
        f'{head}<div class="rag-box-label">{label}</div>{box}<div class="rag-actions">{toggle}</div></div>'
    )


def _raw_text(raw: Callable[[str], str] | None, doc: Document | None) -> str | None:
    if raw is None or doc is None:
        return None
    try:
        return raw(doc.id)
    except KeyError:  # the article left the index since the answer: the mark is found by its text
        return None


# ------------------------------------------------------------------ corpus tab
def corpus_html(
    docs: Mapping[str, Document], chunk_counts: Mapping[str, int], shown: list[Document] | None = None, note: str = ""
) -> str:
    """The indexed articles; ``shown`` is the sorted, filtered selection to list (default: all, by date), ``note`` says why some are not."""
    if shown is None:
        shown = sorted(docs.values(), key=lambda d: (d.date or "", d.id))
    rows = []
    for d in shown:
        dup = f'<div class="rag-dup">same report as {esc(d.duplicate_of)}</div>' if d.duplicate_of else ""
        inherited = f'<div class="rag-inherited">{esc(d.inherited_note())}</div>' if d.inherited else ""
        rows.append(
            f'<tr data-doc="{esc(d.id)}"><td>{esc(doc_title(d))}{dup}{inherited}</td><td>{esc(d.outlet or "–")}</td>'
            f'<td>{esc(d.date or "–")}</td><td class="rag-num">{chunk_counts.get(d.id, 0)}</td><td class="rag-file">{esc(d.id)}</td></tr>'
        )
    n_chunks = sum(chunk_counts.values())
    listed = "" if len(shown) == len(docs) else f" Showing {len(shown)}."
    note = f'<div class="rag-corpus-note">{esc(note)}</div>' if note else ""
    empty = "No articles indexed yet." if not docs else "No article matches."
    return (
        f'<div class="rag-corpus"><div class="rag-corpus-head">{len(docs)} articles, {n_chunks} chunks indexed.{listed} '
        f"Uploaded articles are added to the corpus folder.</div>{note}"
        '<table class="rag-table"><thead><tr><th>Title</th><th>Outlet</th><th>Date</th><th>Chunks</th><th>File</th></tr></thead>'
        f'<tbody>{"".join(rows) or f"<tr><td colspan=5>{empty}</td></tr>"}</tbody></table></div>'
    )


def upload_status_html(lines: list[tuple[str, str]]) -> str:
    """``lines`` are (kind, text) with kind ok | error | info."""
    if not lines:
        return ""
    items = "".join(f'<li class="rag-{kind}">{"⚠ " if kind == "error" else ""}{esc(hide_paths(text))}</li>' for kind, text in lines)
    return f'<ul class="rag-upload-report">{items}</ul>'
