"""Recorded drafts: a backend that keeps what the model wrote for each prompt, and one that replays it.

Every stage after the model (claim checks, the decision, composition) is deterministic given the
model's text and its token probabilities, so a run recorded once can be re-scored in seconds after
a change to those stages (``rag eval --record/--replay``, ``rag bench realtimeqa --record/--replay``).
A draft is looked up by its prompt: when a change reaches what the model reads, the prompt differs,
and the replay says so instead of scoring a draft written for another prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from ..types import Message, RagError
from .llm import ChatModel, TokenProb

DRAFTS_FILE = "drafts.jsonl"


def prompt_key(messages: list[Message], max_tokens: int, temperature: float) -> str:
    """What identifies one generation: the prompt and the sampling settings."""
    blob = json.dumps([messages, max_tokens, temperature], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def score_key(messages: list[Message], head: str, continuation: str) -> str:
    """What identifies one scored continuation: the prompt, the reply's head and the continuation."""
    blob = json.dumps(["score", messages, head, continuation], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class RecordingLLM:
    """Answers with ``inner`` and appends each generation (text and token probabilities) to ``<folder>/drafts.jsonl``."""

    def __init__(self, inner: ChatModel, folder: str | Path):
        self.inner = inner
        self.name = inner.name
        self.path = Path(folder) / DRAFTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")  # one recording per run

    @property
    def load_s(self) -> float:
        return self.inner.load_s

    def model(self) -> object:
        """The inner local model, loaded (so its load is timed as without recording)."""
        return self.inner.model() if hasattr(self.inner, "model") else None

    def token_text(self, token: int) -> str:
        """The inner model's text of one token (an endpoint gives no token probabilities, so this is never asked of it)."""
        return self.inner.token_text(token)  # type: ignore[attr-defined]

    def stream(self, messages: list[Message], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
        own: list[TokenProb] = [] if probs is None else probs
        start = len(own)
        pieces: list[str] = []
        for piece in self.inner.stream(messages, max_tokens, temperature, own):
            pieces.append(piece)
            yield piece
        token_text = getattr(self.inner, "token_text", None)
        tokens = [[token_text(tp.token) if token_text else "", tp.p] for tp in own[start:]]
        row = {"key": prompt_key(messages, max_tokens, temperature), "question": messages[-1]["content"][-300:], "text": "".join(pieces), "tokens": tokens}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def score(self, messages: list[Message], head: str, continuations: list[str]) -> list[float]:
        """The inner model's scores of the continuations (:meth:`rag.answer.llm.LocalLLM.score`), each recorded."""
        scores = self.inner.score(messages, head, continuations)  # type: ignore[attr-defined]
        with self.path.open("a", encoding="utf-8") as f:
            for text, lp in zip(continuations, scores):
                f.write(json.dumps({"key": score_key(messages, head, text), "continuation": text, "score": lp}, ensure_ascii=False) + "\n")
        return scores


class ReplayLLM:
    """Writes, for each prompt, what the recorded model wrote for it, with the same token probabilities."""

    def __init__(self, folder: str | Path, name: str = "local"):
        path = Path(folder) / DRAFTS_FILE
        if not path.is_file():
            raise RagError(f"--replay {folder}: no {DRAFTS_FILE} there (record one with --record {folder})")
        self.drafts: dict[str, dict] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                self.drafts[row["key"]] = row
        self.name = name
        self.load_s = 0.0
        self.missed = 0  # prompts the recording does not hold
        self._pieces: list[str] = []

    def stream(self, messages: list[Message], max_tokens: int, temperature: float, probs: list[TokenProb] | None = None) -> Iterator[str]:
        row = self.drafts.get(prompt_key(messages, max_tokens, temperature))
        if row is None:
            self.missed += 1
            raise RagError(
                "no recorded draft for this prompt: a change reached what the model reads (retrieval, evidence or the prompt); record the run again"
            )
        if probs is not None:
            for piece, p in row["tokens"]:
                probs.append(TokenProb(len(self._pieces), p))
                self._pieces.append(piece)
        yield row["text"]

    def token_text(self, token: int) -> str:
        """The text of a recorded token (tokens are numbered as they are replayed)."""
        return self._pieces[token]

    def score(self, messages: list[Message], head: str, continuations: list[str]) -> list[float]:
        """The recorded scores of the continuations; one never scored for this prompt is refused."""
        out = []
        for text in continuations:
            row = self.drafts.get(score_key(messages, head, text))
            if row is None:
                self.missed += 1
                raise RagError(f"no recorded score for the candidate “{text.strip()}”: a change reached which candidates are scored; record the run again")
            out.append(row["score"])
        return out
