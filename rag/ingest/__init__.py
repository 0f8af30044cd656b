"""Getting articles in: files, records, feeds and pages read and cleaned into Documents, planted text and copies marked, cut into passages.

``corpus`` loads files and record files (``records``), ``cleaning`` keeps the article's own spans,
``hostile`` drops text written to steer a model, ``dedup`` marks copies, ``chunking`` cuts passages;
``fetch`` and ``feeds`` bring pages from the web, ``uploads`` takes the UI's and the API's files.
"""
