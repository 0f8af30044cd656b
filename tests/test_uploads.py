"""Articles added through the Python API, as the UI's upload box adds them."""

from __future__ import annotations

import shutil

from rag import RAG

from .conftest import SEEDS


def test_add_files_saves_checks_and_indexes_without_replacing_an_article(tmp_path):
    shutil.copytree(SEEDS, tmp_path / "corpus")
    RAG.build(tmp_path / "index", [tmp_path / "corpus"])
    up = tmp_path / "up"
    (up / "b").mkdir(parents=True)
    (up / "quay.txt").write_text("Quay notes\n\nThe Pellor lighthouse was repainted red in March.\n")
    (up / "b" / "quay.txt").write_text("Quay notes\n\nThe Pellor lighthouse is to be demolished, the council said.\n")
    (up / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    r = RAG.open(tmp_path / "index", corpus_dir=str(tmp_path / "added"))
    lines = r.add_files([up / "quay.txt", up / "photo.txt"])
    assert any(kind == "ok" and text.startswith("quay.txt: added (") for kind, text in lines)
    assert any(kind == "error" and text.startswith("photo.txt: binary file, not a text article") for kind, text in lines)
    lines = r.add_files([up / "b" / "quay.txt"])
    assert ("info", "quay.txt: an article of this name is already in the corpus; saved as quay-2.txt") in lines
    assert sorted(p.name for p in (tmp_path / "added").iterdir()) == ["quay-2.txt", "quay.txt"]
    assert {"quay.txt", "quay-2.txt"} <= set(r.index.docs)
