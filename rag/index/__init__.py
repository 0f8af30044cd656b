"""The index: its folder (``layout``), reading a generation (``reader``), writing one (``plan``, ``writer``), and searching it.

Segments hold the passages, vectors and BM25 postings (``segments``); ``embedding`` embeds passages
and questions alike; ``ann`` is the approximate vector index, ``store`` where a search runs (the
index's own arrays or a Qdrant collection), ``retrieval`` the hybrid search over them;
``distributed`` builds segments on a Ray cluster.
"""
