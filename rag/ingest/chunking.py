"""Sentence-aware chunks with character spans into the raw file."""

from __future__ import annotations

from ..settings import Settings
from ..text import sentence_end_count, sentence_spans
from ..types import Chunk, Document, Sentence, display_text, unshown_elements

# Punkt costs tens of microseconds per place it tests as a sentence end. A document may have it
# test this many, plus one per this many characters (about one per sentence of real prose); a
# segment that does not fit the budget left (text that is mostly punctuation) is only cut at
# spaces, so splitting stays linear in the file whatever it holds.
_PUNKT_BUDGET = 1_000
_PUNKT_CHARS_PER_END = 100


def _clean_display(text: str, is_html: bool) -> str:
    """A sentence as a reader sees it, on one line (runs of whitespace as one space)."""
    return " ".join(display_text(text, is_html).split())


def _masked(text: str, is_html: bool) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with each element that reads as nothing (a <script> inside a paragraph) as a run of NULs, and those elements.

    Sentences are found, and over-long ones cut, in the masked text: never inside such an
    element, whose code would otherwise read as a sentence of its own.
    """
    gaps = unshown_elements(text) if is_html else []
    if not gaps:
        return text, gaps
    parts, pos = [], 0
    for a, b in gaps:
        parts += [text[pos:a], "\0" * (b - a)]
        pos = b
    return "".join(parts) + text[pos:], gaps


def split_sentences(raw: str, start: int, end: int, max_chars: int, is_html: bool = False, split: bool = True) -> list[Sentence]:
    """Sentences of ``raw[start:end]`` with absolute offsets; over-long ones are cut at spaces.

    ``split=False`` takes the span as one run of text, only cut at spaces.
    """
    out: list[Sentence] = []
    text, gaps = _masked(raw[start:end], is_html)
    spans = sentence_spans(text) if split else [(0, end - start)]
    for s, e in spans:
        s, e = s + start, e + start
        while e - s > max_chars:  # a huge line with no sentence end: cut at the last space
            cut = text.rfind(" ", s - start + 1, s - start + max_chars) + start
            cut = cut if cut > s else s + max_chars
            for a, b in gaps:  # no space found: not inside an unshown element either
                if start + a < cut < start + b:
                    cut = start + a if start + a > s else min(start + b, e)
            shown = _clean_display(raw[s:cut], is_html)
            if shown:  # a piece that is one long <script> reads as nothing
                out.append(Sentence(s, cut, shown))
            s = cut
            while s < e and raw[s].isspace():
                s += 1
        if s < e:
            shown = _clean_display(raw[s:e], is_html)
            if shown:
                out.append(Sentence(s, e, shown))
    return out


def document_sentences(doc: Document, raw: str, max_chars: int) -> list[list[Sentence]]:
    """Sentences of each kept segment (paragraph) of a document."""
    is_html = doc.is_html
    budget = _PUNKT_BUDGET + sum(e - s for s, e in doc.segments) // _PUNKT_CHARS_PER_END
    out = []
    for s, e in doc.segments:
        ends = sentence_end_count(_masked(raw[s:e], is_html)[0])
        if not ends and e - s <= max_chars:  # one sentence: the common short paragraph, made directly
            text = _clean_display(raw[s:e], is_html)
            out.append([Sentence(s, e, text)] if text else [])
            continue
        split = 0 < ends <= budget
        budget -= ends if split else 0
        out.append(split_sentences(raw, s, e, max_chars, is_html, split))
    return out


def chunk_document(
    doc: Document, raw: str, chunk_chars: int = Settings.chunk_chars, overlap: int = Settings.chunk_overlap_sentences
) -> list[Chunk]:
    """Pack consecutive sentences into chunks of at most ``chunk_chars``; ``overlap`` sentences repeat."""
    paragraphs = document_sentences(doc, raw, chunk_chars)
    flat: list[tuple[Sentence, int]] = [(s, pi) for pi, para in enumerate(paragraphs) for s in para]
    chunks: list[Chunk] = []
    i = 0
    while i < len(flat):
        j, size = i, 0
        while j < len(flat) and (j == i or size + len(flat[j][0].text) + 1 <= chunk_chars):
            size += len(flat[j][0].text) + 1
            j += 1
        sents = [s for s, _ in flat[i:j]]
        parts, prev_para = [], flat[i][1]
        for s, pi in flat[i:j]:
            parts.append(("\n\n" if pi != prev_para else " ") + s.text if parts else s.text)
            prev_para = pi
        chunks.append(
            Chunk(
                id=f"{doc.id}#{len(chunks)}",
                doc_id=doc.id,
                text="".join(parts),
                start=sents[0].start,
                end=sents[-1].end,
                sentences=sents,
            )
        )
        if j >= len(flat):
            break
        i = max(j - overlap, i + 1)
    return chunks
