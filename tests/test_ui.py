"""The chat UI in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from pathlib import Path

import pytest

from .conftest import ROOT, SEEDS
from .test_endpoint import Endpoint

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-output"
Q2012 = "Why did ties between Iran and Hamas break down in 2012?"
ARTICLE = (
    "Zorblat Bridge opens to traffic\n\nMay 5, 2019\n\n"
    "The Zorblat Bridge over the Vesna river opened to traffic on 4 May 2019. Mayor Ilse Brandt cut the ribbon at the ceremony.\n"
)
TIMEOUT = 120_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory) -> Path:
    """The server's folder: corpus/ (a copy of the seeds, where uploads go) and index/."""
    return tmp_path_factory.mktemp("ui")


OPERATOR_KEY = "sk-operator-secret"


@pytest.fixture(scope="module")
def endpoint():
    """An OpenAI-compatible endpoint on 127.0.0.1 that records the headers it is sent."""
    srv = Endpoint()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def server(ui_root, endpoint):
    from rag import RAG
    from rag.index.writer import build
    from ui.app import build_app, launch

    d = ui_root
    shutil.copytree(SEEDS, d / "corpus")
    build(d / "index", [d / "corpus"])
    rag = RAG.open(
        d / "index",
        llm="extractive",
        openai_api_key=OPERATOR_KEY,
        ui_endpoints=endpoint.url("listed"),  # the operator lets visitors use this endpoint with its key
        fetch_allow_private=f"127.0.0.1:{endpoint.server_address[1]}",  # and lets them reach its host, though local
        local_model=str(d / "models" / "missing.gguf"),  # a misconfigured server: its error must not show where
    )
    demo = build_app(rag, corpus_dir=d / "corpus", warm=False)
    url = launch(demo, rag.settings, "127.0.0.1", _free_port(), block=False)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()


def _page(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.wait_for_selector("#rag-question textarea")
    return page


def _ask(page, question: str, turn: int):
    page.fill("#rag-question textarea", question)
    page.click("#rag-ask")
    answer = page.locator(f"#rag-chat .rag-turn{turn}")
    answer.locator(".rag-text, .rag-abstain, .rag-error").first.wait_for()
    return answer


def _shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_ask_click_citation_and_see_the_highlighted_quote(server, browser):
    page = _page(browser, server)
    answer = _ask(page, Q2012, 0)
    assert "Damascus" in answer.inner_text()
    markers = answer.locator(".rag-cite")
    assert markers.count() >= 1
    # the marker whose quote is from the 2013 article
    panel = page.locator("#rag-sources-panel")
    for i in range(markers.count()):
        markers.nth(i).click()
        panel.locator(".rag-view-passage").wait_for()
        if panel.locator('.rag-view-passage[data-doc="000_7d385fec3d1c01e6.txt"]').count():
            break
    view = panel.locator('.rag-view-passage[data-doc="000_7d385fec3d1c01e6.txt"]')
    assert view.count() == 1
    assert "Damascus" in view.locator("mark.rag-quote").inner_text()
    assert "2013" in view.locator(".rag-date").inner_text()
    _shot(page, "ui-2012-sources")
    view.locator(".rag-action").click()  # one more click: the whole cleaned article, the quote marked
    article = panel.locator(".rag-view-article .rag-article")
    article.wait_for()
    assert "Damascus" in article.locator("mark.rag-focus").inner_text()
    assert "Izzat Al-Rishq" in article.inner_text()  # the whole article, not just the passage
    page.wait_for_function(  # scrolled so that the quote is in view inside the article box
        """() => { const box = document.querySelector('#rag-sources-panel .rag-article');
                   const m = box && box.querySelector('mark.rag-focus'); if (!m) return false;
                   const b = box.getBoundingClientRect(), r = m.getBoundingClientRect();
                   return r.top >= b.top && r.bottom <= b.bottom; }"""
    )
    answer.locator("details.rag-timings summary").click()  # per-answer timings, collapsed until opened
    assert answer.locator("details.rag-timings").get_by_text("Retrieval").is_visible()
    # a follow-up is rewritten into a standalone question, shown before the answer
    follow = _ask(page, "And what happened in 2014?", 1)
    standalone = follow.locator(".rag-rewritten .rag-standalone")
    assert standalone.count() == 1 and standalone.inner_text() != "And what happened in 2014?"
    _shot(page, "ui-follow-up")
    page.click("#rag-new")
    page.wait_for_function("document.querySelectorAll('#rag-chat .rag-answer').length === 0")
    page.close()


def test_settings_panel_shows_api_fields_only_for_the_api_backend(server, browser):
    page = _page(browser, server)
    base_url = page.locator("#rag-base-url")
    assert not base_url.is_visible()
    page.locator("#rag-backend").get_by_text("OpenAI-compatible API").click()
    base_url.wait_for(state="visible")
    assert page.locator("#rag-api-model").is_visible()
    page.locator("#rag-backend").get_by_text("Extractive (no model)").click()
    base_url.wait_for(state="hidden")
    assert page.locator("#rag-topk input[type=number]").input_value() == "5"
    page.close()


def test_out_of_corpus_question_is_shown_as_abstained(server, browser):
    page = _page(browser, server)
    answer = _ask(page, "What is the capital of Australia?", 0)
    assert answer.locator(".rag-abstain").count() == 1 and answer.locator(".rag-error").count() == 0
    # the reader is told why, and may open the closest passages, marked as not an answer
    assert "Why: no passage is about the question" in answer.locator(".rag-abstain-why").inner_text()
    related = answer.locator("details.rag-related")
    assert related.count() == 1 and "not an answer" in related.locator("summary").inner_text()
    page.close()


def _new_conversation(page) -> None:
    page.click("#rag-new")
    page.wait_for_function("document.querySelectorAll('#rag-chat .rag-answer').length === 0")


def test_date_controls_limit_the_articles_and_latest_puts_2017_first(server, browser):
    page = _page(browser, server)
    page.fill("#rag-since input", "2014-01-01")
    page.fill("#rag-until input", "2014-12-31")
    answer = _ask(page, "Did Iran resume financial support for Hamas?", 0)
    markers = answer.locator(".rag-cite")
    assert markers.count() >= 1
    # each marker's tooltip gives its article's outlet and date: all the 2014 report
    assert {markers.nth(i).get_attribute("title").rsplit(", ", 1)[-1] for i in range(markers.count())} == {"2014-03-25"}
    _new_conversation(page)  # each question on its own, not a follow-up of the last
    page.fill("#rag-since input", "2015")
    page.fill("#rag-until input", "2016")
    empty = _ask(page, "Did Iran resume financial support for Hamas?", 0)
    assert "no indexed article was published between 1 January 2015 and 31 December 2016" in empty.locator(".rag-abstain-why").inner_text()
    _new_conversation(page)
    page.fill("#rag-since input", "")
    page.fill("#rag-until input", "")
    latest = _ask(page, "What is the latest on Iran–Hamas ties?", 0)
    first = latest.locator(".rag-cite").first
    assert "The Jerusalem Post, 2017-05-30" in first.get_attribute("title")
    assert "newest reports" in latest.locator(".rag-notes").inner_text()
    first.click()
    meta = page.locator('#rag-sources-panel .rag-view-passage[data-doc="003_40096b35d0a24c1b.txt"] .rag-also')
    assert "The Jerusalem Post, 2017-05-30" in meta.inner_text()  # the copy in 001 shows the date and outlet of 003
    # "as of" a day in 2014: "this week" is the week before it
    _new_conversation(page)
    page.fill("#rag-as-of input", "2014-03-28")
    week = _ask(page, "What happened this week between Iran and Hamas?", 0)
    assert "“this week” read as 22 March 2014 to 28 March 2014." in week.locator(".rag-notes").inner_text()
    assert "2014-03-25" in week.locator(".rag-cite").first.get_attribute("title")
    _shot(page, "ui-dates")
    # the corpus tab sorts and filters by date and outlet; metadata from another copy is marked
    page.get_by_role("tab", name="Corpus").click()
    table = page.locator("#rag-corpus-table")
    table.get_by_text("date and outlet from the copy 003_40096b35d0a24c1b.txt").wait_for()
    page.fill("#rag-list-outlet input", "algemeiner")
    page.press("#rag-list-outlet input", "Enter")
    page.wait_for_function("document.querySelectorAll('#rag-corpus-table tbody tr').length === 1")
    assert table.locator("tbody tr").get_attribute("data-doc") == "002_0cd934058d5d1ad9.txt"
    page.fill("#rag-list-outlet input", "")
    page.fill("#rag-list-since input", "2017")
    page.press("#rag-list-since input", "Enter")
    page.wait_for_function("document.querySelectorAll('#rag-corpus-table tbody tr').length === 2")
    assert {table.locator("tbody tr").nth(i).get_attribute("data-doc") for i in range(2)} == {"001_fcf509d334208b0a.txt", "003_40096b35d0a24c1b.txt"}
    page.fill("#rag-list-since input", "")
    page.press("#rag-list-since input", "Enter")
    page.locator("#rag-list-sort input").click()
    page.get_by_role("option", name="Outlet").click()
    page.wait_for_function(
        "(() => { const r = document.querySelectorAll('#rag-corpus-table tbody tr'); return r.length > 3 && r[0].dataset.doc.startsWith('002_'); })()"
    )
    _shot(page, "ui-corpus-dates")
    page.close()


def test_upload_an_article_then_get_it_cited_and_binary_is_refused(server, browser, ui_root, tmp_path):
    page = _page(browser, server)
    page.get_by_role("tab", name="Corpus").click()
    good = tmp_path / "zorblat.txt"
    good.write_text(ARTICLE)
    page.set_input_files("#rag-upload input[type=file]", str(good))
    status = page.locator("#rag-upload-status")
    status.get_by_text("zorblat.txt: added").wait_for()
    assert "Zorblat Bridge opens to traffic" in page.locator("#rag-corpus-table").inner_text()
    bad = tmp_path / "photo.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    pdf = tmp_path / "notes.pdf"
    pdf.write_bytes(b"%PDF-1.4 not an article")
    page.set_input_files("#rag-upload input[type=file]", [str(bad), str(pdf)])
    status.get_by_text("photo.txt: binary file, not a text article").wait_for()
    assert status.get_by_text("notes.pdf: unsupported file type .pdf").is_visible()
    assert not (ui_root / "corpus" / "photo.txt").exists() and not (ui_root / "corpus" / "notes.pdf").exists()
    _shot(page, "ui-upload")
    # a hostile file name is reduced to a safe base name inside the corpus folder
    page.set_input_files(
        "#rag-upload input[type=file]",
        {"name": "..%2F..%2Fevil name (1).txt", "mimeType": "text/plain", "buffer": b"Harbour notes\n\nThe Quarnix ferry timetable changes every spring.\n"},
    )
    status.get_by_text(": added").wait_for()
    added = sorted(p.name for p in (ui_root / "corpus").iterdir() if "evil" in p.name)
    assert len(added) == 1 and re.fullmatch(r"[A-Za-z0-9._-]+\.txt", added[0]), added
    assert not list(ui_root.parent.rglob("evil*")) or all(p.parent == ui_root / "corpus" for p in ui_root.parent.rglob("evil*"))
    page.get_by_role("tab", name="Chat").click()
    answer = _ask(page, "Who cut the ribbon at the Zorblat Bridge?", 0)
    assert "Brandt" in answer.inner_text()
    answer.locator(".rag-cite").first.click()
    page.locator('#rag-sources-panel .rag-view-passage[data-doc="zorblat.txt"]').wait_for()
    page.close()


def test_two_sessions_asking_at_once_each_get_their_own_answer(server, browser):
    pages = [_page(browser, server), _page(browser, server)]
    questions = ["Which country helped broker the reconciliation between Hamas and Iran in 2014?", "Who declared that Hamas had formed a joint command with Islamic Jihad?"]
    for page, q in zip(pages, questions, strict=True):
        page.fill("#rag-question textarea", q)
    for p in pages:  # both submitted before either is answered: the server queue holds them
        p.click("#rag-ask")
    for p in pages:
        p.locator("#rag-chat .rag-turn0 .rag-text").wait_for()
    assert "Qatar" in pages[0].locator("#rag-chat .rag-turn0").inner_text()
    assert "Zahar" in pages[1].locator("#rag-chat .rag-turn0").inner_text()
    assert pages[0].locator("#rag-chat .rag-answer").count() == 1 and pages[1].locator("#rag-chat .rag-answer").count() == 1
    for p in pages:
        p.close()


def _use_api(page, url: str, key: str = "") -> None:
    page.locator("#rag-backend").get_by_text("OpenAI-compatible API").click()
    page.locator("#rag-base-url textarea, #rag-base-url input").first.fill(url)
    if key:
        page.locator("#rag-api-key input").fill(key)


def test_the_server_api_key_goes_only_to_endpoints_the_operator_set(server, browser, endpoint):
    page = _page(browser, server)
    # a URL the operator did not list, without a key of the visitor's own: refused in one line, nothing sent
    _use_api(page, endpoint.url("ok"))
    answer = _ask(page, Q2012, 0)
    assert [r["headers"]["Authorization"] for r in endpoint.requests] == []
    error = answer.locator(".rag-error").inner_text()
    assert f"{endpoint.url('ok')} is not an endpoint this server sends its API key to: enter your own API key" in error
    # with the visitor's own key it is used, and only that key is sent
    _use_api(page, endpoint.url("ok"), "sk-visitor")
    _ask(page, Q2012, 1).locator(".rag-text, .rag-abstain").first.wait_for()
    assert endpoint.requests and {r["headers"]["Authorization"] for r in endpoint.requests} == {"Bearer sk-visitor"}
    # an endpoint the operator listed gets the operator's key
    endpoint.requests.clear()
    page.locator("#rag-api-key input").fill("")
    _use_api(page, endpoint.url("listed"))
    _ask(page, Q2012, 2).locator(".rag-text, .rag-abstain").first.wait_for()
    assert {r["headers"]["Authorization"] for r in endpoint.requests} == {f"Bearer {OPERATOR_KEY}"}
    page.close()


def test_no_server_path_is_shown_to_visitors(server, browser, ui_root):
    page = _page(browser, server)
    seen = []
    answer = _ask(page, Q2012, 0)
    answer.locator(".rag-cite").first.click()
    page.locator("#rag-sources-panel .rag-view-passage .rag-action").click()
    page.locator("#rag-sources-panel .rag-view-article").wait_for()
    seen.append(page.locator("body").inner_text())
    # a server misconfiguration reaches the visitor as one line naming the file, not where it is
    page.locator("#rag-backend").get_by_text("Local model (llama.cpp)").click()
    error = _ask(page, Q2012, 1).locator(".rag-error")
    assert error.inner_text().strip() == "⚠ local model file not found: missing.gguf"
    seen.append(page.locator("body").inner_text())
    page.get_by_role("tab", name="Corpus").click()
    page.locator("#rag-corpus-table .rag-corpus").wait_for()
    seen.append(page.locator("body").inner_text())
    for text in seen:
        assert str(ui_root) not in text
    page.close()


def test_an_upload_never_replaces_an_article_of_the_same_name(server, browser, ui_root):
    page = _page(browser, server)
    page.get_by_role("tab", name="Corpus").click()
    status = page.locator("#rag-upload-status")
    first = b"Quay notes\n\nThe Pellor lighthouse was repainted red in March.\n"
    other = b"Quay notes\n\nThe Pellor lighthouse is to be demolished, the council said.\n"
    page.set_input_files("#rag-upload input[type=file]", {"name": "quay.txt", "mimeType": "text/plain", "buffer": first})
    status.get_by_text("quay.txt: added").wait_for()
    page.set_input_files("#rag-upload input[type=file]", {"name": "quay.txt", "mimeType": "text/plain", "buffer": other})
    status.get_by_text("quay.txt: an article of this name is already in the corpus; saved as quay-2.txt").wait_for()
    assert status.get_by_text("quay-2.txt: added").is_visible()
    assert (ui_root / "corpus" / "quay.txt").read_bytes() == first
    assert (ui_root / "corpus" / "quay-2.txt").read_bytes() == other
    page.set_input_files("#rag-upload input[type=file]", {"name": "quay.txt", "mimeType": "text/plain", "buffer": other})
    status.get_by_text("quay-2.txt: already in the corpus, unchanged").wait_for()
    assert not (ui_root / "corpus" / "quay-3.txt").exists()
    page.close()
