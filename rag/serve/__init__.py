"""``rag serve``: the RAG object over HTTP (``app``), and what its endpoints read and write (``wire``)."""
