"""Answering a question from retrieved passages: the pipeline and its stages, from evidence to a verified Answer.

``pipeline`` runs them in order: ``evidence`` (the sentences the model reads), the draft written by a
backend of ``llm`` (``prompts``; ``drafts`` records and replays them), ``candidates`` (answers ranked
by the model), ``verify`` (claim checks), ``decision`` (whether the answer stands) and ``compose``
(the Answer a reader sees).
"""
