"""Question answering over news articles with verified, exact citations."""

from .settings import Settings
from .types import ABSTAIN_TEXT, Answer, AnswerSentence, Chunk, Citation, Document, Passage, RagError, display_text

__all__ = ["RAG", "Settings", "Answer", "AnswerSentence", "Chunk", "Citation", "Document", "Passage", "RagError", "ABSTAIN_TEXT", "display_text"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # RAG is imported on first use: `rag ask` starts loading the model before the answering
    # modules (and bm25s, faiss, scipy) are imported, and `rag --help` never imports them
    if name == "RAG":
        from .api import RAG

        return RAG
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
