"""What ``rag serve`` reads and writes: the OpenAI-compatible and REST bodies as pydantic models, which are also its OpenAPI schema."""

from __future__ import annotations

from typing import Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field

from ..settings import Settings

MODEL_ID = "newsrag"
# the backends a request may name: Settings.llm's choices, written there once (the OpenAPI schema lists them)
Backend = get_type_hints(Settings)["llm"]


# ---------------------------------------------------------------- the wire format
class ContentPart(BaseModel):
    """One part of a message's content, as OpenAI clients send a list of them; only text parts are read."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text (the text parts joined)."""
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


PERIOD = r"^\d{4}(-\d{2}(-\d{2})?)?$"  # a year, a month or a day; rag.dates still refuses one that does not exist


class Filters(BaseModel):
    """newsrag's own answering options; OpenAI clients send them in ``extra_body``."""

    as_of: str | None = Field(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="YYYY-MM-DD the question is asked as of: favours the articles of the days before it",
    )
    since: str | None = Field(
        None, pattern=PERIOD, description="only articles published on or after this day (YYYY, YYYY-MM or YYYY-MM-DD)"
    )
    until: str | None = Field(
        None, pattern=PERIOD, description="only articles published on or before this day (YYYY, YYYY-MM or YYYY-MM-DD)"
    )
    top_k: int | None = Field(None, ge=1, le=50, description="passages to retrieve")
    backend: Backend | None = Field(None, description="the server's own backend (the default) or extractive")


class ChatRequest(Filters):
    """An OpenAI chat completion request: the last user message is the question, earlier turns feed its rewrite."""

    model_config = ConfigDict(extra="allow")  # temperature, max_tokens and the like are accepted and ignored
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False


class AskRequest(Filters):
    question: str = Field(min_length=1, pattern=r"[^\s\x00-\x1f\x7f]", description="at most max_question_chars (2,000) characters")
    stream: bool = False


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error: one line of JSON, OpenAI's shape, never a traceback."""

    error: ErrorDetail


class Citation(BaseModel):
    """A verified citation: the source file's text ``[start:end]`` is ``quote``."""

    model_config = ConfigDict(extra="allow")
    n: int
    source_file: str
    title: str | None
    outlet: str | None
    date: str | None
    quote: str
    start: int
    end: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str


class ChatCompletion(BaseModel):
    """OpenAI's chat completion, with the citations beside ``choices`` (the client's ``model_extra``)."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    citations: list[Citation]
    abstained: bool
    standalone_question: str


class AskAnswer(BaseModel):
    """The JSON of ``rag ask --json``."""

    model_config = ConfigDict(extra="allow")
    question: str
    answer: str
    abstained: bool
    citations: list[Citation]


class Model(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Article(BaseModel):
    """An indexed article as ``rag list`` shows it: names, never server paths."""

    id: str
    title: str | None
    outlet: str | None
    author: str | None
    date: str | None
    url: str | None
    chunks: int
    duplicate_of: str | None
    inherited: dict[str, str]


class ArticleList(BaseModel):
    articles: list[Article]
    undated_left_out: int


class UploadLine(BaseModel):
    kind: Literal["ok", "error", "info"]
    text: str


class UploadReport(BaseModel):
    """One line per outcome, as the UI's upload report shows them."""

    lines: list[UploadLine]


class Health(BaseModel):
    status: str
    articles: int
    backend: str
    waiting: int


ERRORS = {status: {"model": ErrorBody} for status in (400, 413, 422, 429, 500)}
# each server-sent event: its name (none for chat chunks) and one line of JSON, or [DONE]
SSE_EVENT = {"type": "object", "properties": {"event": {"type": "string"}, "data": {"type": "string"}}, "required": ["data"]}
SSE_CONTENT = {"text/event-stream": {"schema": SSE_EVENT}}
