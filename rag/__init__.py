"""Question answering over news articles with verified, exact citations."""

from .api import RAG
from .settings import Settings
from .types import Answer, AnswerSentence, Chunk, Citation, Document, Passage, RagError

__all__ = ["RAG", "Settings", "Answer", "AnswerSentence", "Chunk", "Citation", "Document", "Passage", "RagError"]
__version__ = "0.1.0"
