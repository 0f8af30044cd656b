"""A user's mistakes through the real `rag` command: each gets one clear line and loses nothing indexed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rag.cli import main
from rag.index.writer import build

from .conftest import SEEDS

SEED_IDS = sorted(f.name for f in SEEDS.glob("*.txt"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """An index of the seed articles, built once; each test works on a copy of it."""
    d = tmp_path_factory.mktemp("built")
    shutil.copytree(SEEDS, d / "corpus")
    report = build(d / "idx", [d / "corpus"])
    assert len(report.added) == 4
    return d / "idx"


@pytest.fixture()
def idx(built, tmp_path) -> Path:
    shutil.copytree(built, tmp_path / "idx")
    return tmp_path / "idx"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *expected: str) -> None:
    """The user sees exactly one `error:` line, naming the problem; never a traceback or "unexpected"."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "unexpected" not in err and "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]


def listed(capsys, idx: Path) -> list[str]:
    code, out, err = run(capsys, "list", "--index", idx)
    assert code == 0, err
    return out.splitlines()


def assert_seeds_listed(capsys, idx: Path) -> None:
    rows = listed(capsys, idx)
    assert len(rows) == 4 and all(any(i in r for r in rows) for i in SEED_IDS), rows


# ---------------------------------------------------------------- syncing to the wrong place
def test_mistyped_folder_changes_nothing_and_plain_index_still_knows_the_folder(capsys, idx):
    code, out, err = run(capsys, "index", idx.parent / "corpus_typo", "--index", idx)
    assert code == 1 and not out
    one_error_line(err, "corpus_typo: no such file or folder", "nothing changed")
    assert_seeds_listed(capsys, idx)
    code, out, err = run(capsys, "index", "--index", idx)  # the folder of the last good build
    assert code == 0 and "0 removed, 4 unchanged" in out, err


def test_sync_that_would_remove_most_articles_refuses_until_allowed(capsys, idx, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(SEEDS / SEED_IDS[0], one)
    code, out, err = run(capsys, "index", one, "--index", idx)
    assert code == 1 and not out
    one_error_line(err, "would remove 3 of the 4 indexed articles", SEED_IDS[1], "rag index remove", "--allow-remove")
    assert_seeds_listed(capsys, idx)
    code, out, err = run(capsys, "index", one, "--index", idx, "--allow-remove")
    assert code == 0 and "3 removed" in out, err
    assert len(listed(capsys, idx)) == 1


# ---------------------------------------------------------------- a file that fails to load
def test_files_that_fail_to_load_keep_their_last_indexed_version(capsys, idx, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SEEDS, corpus)
    page = corpus / "page.html"
    page.write_text("<html><body><p>The Zorblat Bridge over the Vesna river opened on 4 May 2019.</p></body></html>")
    colon = corpus / "note: bridge.txt"
    colon.write_text("Bridge note\n\nThe Vesna ferry stopped running once the Zorblat Bridge opened in May 2019.\n")
    code, out, err = run(capsys, "index", corpus, "--index", idx)
    assert code == 0 and "2 added" in out, err
    page.write_text(page.read_text().replace("</p>", "</p><![foo bar]>"))  # HTML that will not parse
    colon.write_text("\n\n")  # a name with ':' whose file went empty
    sidecar = corpus / f"{SEED_IDS[0]}.meta.json"
    sidecar.write_text('{"title": ')  # a malformed sidecar
    code, out, err = run(capsys, "index", corpus, "--index", idx)
    assert code == 1 and "0 removed" in out
    assert "unexpected" not in err and "Traceback" not in err
    for name in ("page.html", "note: bridge.txt"):
        assert any(name in line and "kept the last indexed version" in line for line in err.splitlines()), err
    rows = listed(capsys, idx)
    assert len(rows) == 6 and any("page.html" in r for r in rows) and any("note: bridge.txt" in r for r in rows)
    assert any(SEED_IDS[0] in r for r in rows)


# ---------------------------------------------------------------- a damaged index
@pytest.mark.parametrize("damage", ["CURRENT garbled", "CURRENT deleted", "manifest garbled"])
def test_rebuild_recovers_a_damaged_index_without_naming_the_folder(capsys, idx, damage):
    current = idx / "CURRENT"
    broken = {"CURRENT garbled": current, "CURRENT deleted": current, "manifest garbled": idx / current.read_text() / "manifest.json"}[
        damage
    ]
    if damage == "CURRENT deleted":
        current.unlink()
    else:
        broken.write_bytes(b"\xff\xfe{garbage")
    code, out, err = run(capsys, "list", "--index", idx)
    assert code == 1
    one_error_line(err, str(broken), f"rag index --rebuild --index {idx}")
    code, out, err = run(capsys, "index", "--rebuild", "--index", idx)
    assert code == 0 and "4 added" in out, err
    assert_seeds_listed(capsys, idx)


# ---------------------------------------------------------------- bad values
def test_question_that_is_not_utf8_is_refused_in_one_line(capsys, idx):
    # what Python makes of the bytes ff fe in a command line (surrogateescape)
    code, out, err = run(capsys, "ask", "\udcff\udcfe", "--index", idx, "--llm", "extractive")
    assert code == 1 and not out
    one_error_line(err, "not valid UTF-8")
    assert_seeds_listed(capsys, idx)


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_top_k_below_one_is_refused(capsys, idx, value):
    with pytest.raises(SystemExit) as stop:
        main(["ask", "Why did ties between Iran and Hamas break down?", "--top-k", value, "--index", str(idx), "--llm", "extractive"])
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and not out
    assert f"argument --top-k: '{value}' is not a whole number of at least 1" in err and "Traceback" not in err
    assert_seeds_listed(capsys, idx)


@pytest.mark.parametrize("port", ["99999", "-5", "http"])
def test_ui_port_out_of_range_is_refused(capsys, idx, port):
    with pytest.raises(SystemExit) as stop:
        main(["ui", "--port", port, "--index", str(idx)])
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and f"argument --port: '{port}' is not a port number" in err and "unexpected" not in err


def test_ui_on_a_port_already_taken_is_one_line(capsys, idx):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "ui", "--port", port, "--index", idx)
    assert code == 1 and f"cannot serve the UI on 127.0.0.1:{port}" in err and "unexpected" not in err


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("RAG_TOP_K", "abc", "RAG_TOP_K='abc' is not a whole number"),
        ("RAG_TOP_K", "0", "top_k is 0"),
        ("RAG_MIN_RELEVANCE", "high", "RAG_MIN_RELEVANCE='high' is not a number"),
    ],
)
def test_malformed_environment_variable_is_named(capsys, idx, monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "list", "--index", idx)
    assert code == 1 and not out
    one_error_line(err, expected)
    monkeypatch.delenv(name)
    assert_seeds_listed(capsys, idx)


# one bad value per group of settings (the paths group takes any text; a folder that is a file is tested below)
BAD_BY_GROUP = {
    "chunking": ("RAG_CHUNK_CHARS", "-5", "chunk_chars is -5 (RAG_CHUNK_CHARS): it must be at least 1"),
    "retrieval": ("RAG_EMBED_PRECISION", "fp16", "embed_precision is 'fp16' (RAG_EMBED_PRECISION): it must be one of auto, fp32, bf16"),
    "store": ("RAG_STORE", "elastic", "store is 'elastic' (RAG_STORE): it must be one of"),
    "cluster": ("RAG_RAY_ACTOR_GPUS", "-1", "ray_actor_gpus is -1.0 (RAG_RAY_ACTOR_GPUS): it must be at least 0"),
    "model": ("RAG_LLM", "gpt", "llm is 'gpt' (RAG_LLM): it must be one of local, openai, extractive"),
    "checks": ("RAG_SUPPORT_THRESHOLD", "1.5", "support_threshold is 1.5 (RAG_SUPPORT_THRESHOLD): it must be at least 0 and at most 1"),
    "limits": ("RAG_MAX_PENDING", "0", "max_pending is 0 (RAG_MAX_PENDING): it must be at least 1"),
    "serve": ("RAG_SERVE_QUEUE", "-1", "serve_queue is -1 (RAG_SERVE_QUEUE): it must be at least 0"),
    "fetching": ("RAG_FETCH_TOTAL_S", "0", "fetch_total_s is 0.0 (RAG_FETCH_TOTAL_S): it must be above 0"),
}


def test_every_group_of_settings_has_a_bad_value_case():
    from rag.settings import groups

    assert set(BAD_BY_GROUP) == set(groups()) - {"paths"}


@pytest.mark.parametrize("group", sorted(BAD_BY_GROUP))
def test_a_bad_setting_of_each_group_fails_at_open_in_one_line(capsys, idx, monkeypatch, group):
    name, value, expected = BAD_BY_GROUP[group]
    monkeypatch.setenv(name, value)
    code, out, err = run(capsys, "ask", "Who?", "--llm", "extractive", "--index", idx) if name != "RAG_LLM" else run(capsys, "list", "--index", idx)
    assert code == 1 and not out
    one_error_line(err, expected)
    monkeypatch.delenv(name)
    assert_seeds_listed(capsys, idx)


@pytest.mark.parametrize("command", ["index", "list", "ask"])
def test_index_option_pointing_at_a_file_is_named(capsys, tmp_path, command, built):
    target = tmp_path / "notes.txt"
    target.write_text("not an index")
    args = {"index": ["index", built.parent / "corpus"], "list": ["list"], "ask": ["ask", "Who?", "--llm", "extractive"]}[command]
    code, out, err = run(capsys, *args, "--index", target)
    assert code == 1 and not out
    one_error_line(err, f"{target} is a file, not an index folder")
    assert target.read_text() == "not an index"


def test_index_folder_that_cannot_be_written_is_named(capsys, idx, built):
    if os.geteuid() == 0:  # permissions do not stop root: a folder no one may create
        target = Path("/sys/newsrag-index")
    else:
        target = idx
        os.chmod(idx, 0o555)
    code, out, err = run(capsys, "index", built.parent / "corpus", "--index", target)
    assert code == 1 and not out
    one_error_line(err, f"cannot write to the index folder {target}/")
    os.chmod(idx, 0o755)
    assert_seeds_listed(capsys, idx)


# ---------------------------------------------------------------- printing file names
def test_list_escapes_names_that_would_spoof_rows(capsys, idx, tmp_path):
    rlo = tmp_path / "report\u202etxt.exe.txt"
    rlo.write_text("Ferry note\n\nThe Vesna ferry resumed in June 2019 after repairs.\n")
    named = tmp_path / "spoof\n2099-01-01  Fake News               9 chunks  fake.txt"
    named.write_text("Third note\n\nA third ferry note was filed in July 2019.\n")
    code, out, err = run(capsys, "index", "add", rlo, named, "--index", idx)
    assert code == 0, err
    rows = listed(capsys, idx)
    assert len(rows) == 6  # one row per article: a newline in a name cannot add one
    assert not any(r.startswith("2099") for r in rows)
    assert "\u202e" not in "".join(rows) and any("report\\u202etxt.exe.txt" in r for r in rows)
    assert any("spoof\\n2099-01-01" in r for r in rows)
