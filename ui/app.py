"""The chat UI: streamed answers with clickable, verified citations, a sources panel, follow-up
questions, backend settings and a corpus tab for adding articles.

All question answering happens in :mod:`rag`; this module only wires it to Gradio and renders
(through :mod:`ui.render`). Per-user state lives in ``gr.State``; the one shared object is the
opened :class:`rag.RAG`, which is safe to use from several sessions at once.
"""


import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from rag import RAG, RagError, Settings

from . import render
from .render import Turn

log = logging.getLogger("ui")

CSS_PATH = Path(__file__).with_name("style.css")

BACKENDS = [("Local model (llama.cpp)", "local"), ("OpenAI-compatible API", "openai"), ("Extractive (no model)", "extractive")]

# One document-level listener forwards clicks on any citation marker (in the chat or in the
# sources panel) to the sources panel's "click" event, with the marker's data attached.
CITE_JS = r"""
window.__ragTrigger = trigger;
if (!window.__ragCiteBound) {
  window.__ragCiteBound = true;
  document.addEventListener('click', (ev) => {
    const b = ev.target instanceof Element ? ev.target.closest('.rag-cite') : null;
    const t = b && b.className.match(/\brag-t(\d+)\b/);
    const n = b && b.className.match(/\brag-n(\d+)\b/);
    if (!t || !n) return;
    const v = b.className.match(/\brag-v-(\w+)\b/);
    ev.preventDefault();
    ev.stopPropagation();
    document.querySelectorAll('.rag-cite.rag-active').forEach((x) => x.classList.remove('rag-active'));
    if (!b.classList.contains('rag-action') && !b.classList.contains('rag-link')) b.classList.add('rag-active');
    window.__ragTrigger('click', {turn: Number(t[1]), n: Number(n[1]), view: v ? v[1] : 'passage'});
  }, true);
}
watch('value', () => {
  const box = element.querySelector('.rag-article');
  const m = element.querySelector('mark.rag-focus');
  if (box && m) box.scrollTop = Math.max(0, m.offsetTop - box.clientHeight / 3);
  const panel = element.querySelector('.rag-sources');
  if (panel && (panel.classList.contains('rag-view-passage') || panel.classList.contains('rag-view-article'))) {
    const r = element.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight) element.scrollIntoView({block: 'start'});
  }
});
"""


def corpus_table(rag: RAG, sort: str = "date", since: str = "", until: str = "", outlet: str = "") -> str:
    """The article list, sorted by date, outlet or title and filtered by date range and outlet."""
    rag.refresh()
    docs = rag.index.docs
    try:
        shown, undated = rag.articles(sort or "date", since, until, outlet)
    except RagError as exc:  # a date being typed: say what is wrong, list everything meanwhile
        return render.corpus_html(docs, rag.index.chunk_counts, note=f"⚠ {exc}")
    note = f"{render.plural(undated, 'undated article')} left out of the date range." if undated else ""
    return render.corpus_html(docs, rag.index.chunk_counts, shown, note)


def key_endpoints(settings: Settings) -> set[str]:
    """The base URLs the operator's API key may be sent to: its own endpoint and ``RAG_UI_ENDPOINTS``."""
    urls = [settings.openai_base_url, *settings.ui_endpoints.split(",")]
    return {u.strip().rstrip("/") for u in urls if u.strip()}


def _overrides(rag: RAG, backend: str, top_k: float, base_url: str, api_model: str, api_key: str = "") -> dict:
    """Settings for one question from the settings panel.

    The operator's API key goes only to endpoints the operator named; any other URL is used only
    with the visitor's own key, so a visitor cannot make the server hand its key to their server.
    """
    settings = rag.settings
    o: dict = {"llm": backend, "top_k": int(top_k)}
    if backend == "openai":
        url = (base_url or "").strip() or settings.openai_base_url
        key = (api_key or "").strip()
        operators = url.rstrip("/") in key_endpoints(settings)
        if not key and not operators:
            raise RagError(f"{url} is not an endpoint this server sends its API key to: enter your own API key for it in the settings")
        if not operators:  # a visitor's URL must not reach the services behind the server's firewall
            rag.check_endpoint(url)
            o["endpoint_visitor"] = True  # and every request to it is checked where it connects
        o["openai_base_url"] = url
        o["openai_model"] = (api_model or "").strip() or None
        o["openai_api_key"] = key or None  # None keeps the operator's key
    return o


Update = dict  # what gr.skip() and gr.update() return: a change Gradio applies to a component
ChatReply = tuple[list[dict] | Update, list[Turn] | Update, str | Update, str | Update]  # chat, conversation, question box, sources


# Turns a conversation keeps, the oldest dropped first: each holds its answer and passages in the
# server's memory for as long as the tab is open, and a follow-up reads only the last three.
MAX_TURNS = 50


class Handlers:
    """What the app's events do, over the one opened RAG the sessions share; per-user state comes in as ``conv``."""

    def __init__(self, rag: RAG, corpus_dir: str | Path | None = None):
        self.rag = rag
        self.corpus_dir = corpus_dir  # where uploads are saved (default: settings.corpus_dir, else beside the index)

    def respond(
        self,
        question: str,
        conv: list[Turn] | None,
        backend: str,
        top_k: float,
        base_url: str,
        api_model: str,
        api_key: str = "",
        since: str = "",
        until: str = "",
        as_of: str = "",
    ) -> Iterator[ChatReply]:
        """Answer a question of the conversation, streaming the draft, then the verified answer and its sources."""
        rag = self.rag
        conv = list(conv or [])[-(MAX_TURNS - 1) :]  # a session's state stays bounded however long it runs
        if not (question or "").strip():
            gr.Warning("Type a question about the articles first.")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        turn = Turn(question=question.strip(), status="Searching the articles…")
        conv.append(turn)
        i = len(conv) - 1
        try:
            overrides = _overrides(rag, backend, top_k, base_url, api_model, api_key)
            turn.question = rag.check_question(question)
            history = [(t.standalone or t.question, t.answer.text) for t in conv[:-1] if t.answer is not None]
            if history:
                turn.status = "Rewriting the follow-up as a standalone question…"
                yield render.messages(conv), conv, "", gr.skip()
                t0 = time.perf_counter()
                turn.standalone = rag.rewrite(history, turn.question, **overrides)
                turn.timings["rewrite_s"] = time.perf_counter() - t0
                turn.status = "Searching the articles…"
            else:
                turn.standalone = turn.question
            yield render.messages(conv), conv, "", gr.skip()  # the rewritten question shows before retrieval
            rag.refresh()
            last = 0.0
            for item in rag.stream(turn.standalone, as_of=(as_of or "").strip() or None, since=since, until=until, **overrides):
                if isinstance(item, str):
                    turn.draft += item
                    if time.perf_counter() - last > 0.05:
                        last = time.perf_counter()
                        yield render.messages(conv), conv, gr.skip(), gr.skip()
                else:
                    turn.answer = item
        except RagError as exc:
            turn.error = str(exc)
        except Exception as exc:  # a bug: show one line without server details, log the traceback
            log.exception("answering %r failed", question)
            turn.error = f"the answer failed on the server ({type(exc).__name__}); the server log has the details"
        panel = render.sources_html(turn.answer, i, rag.index.docs) if turn.answer is not None else gr.skip()
        yield render.messages(conv), conv, gr.skip(), panel

    def show_source(self, conv: list[Turn] | None, evt: gr.EventData) -> str | Update:
        """The sources panel for a clicked citation marker: the passage, the whole article, or the answer's list."""
        rag = self.rag
        data = getattr(evt, "_data", None) or {}
        try:
            i, n = int(data.get("turn", -1)), int(data.get("n", 0))
        except (TypeError, ValueError):
            return gr.skip()
        if not conv or not 0 <= i < len(conv) or conv[i].answer is None:
            return gr.skip()
        answer = conv[i].answer
        view = data.get("view") or "passage"
        if view == "list" or n <= 0:
            return render.sources_html(answer, i, rag.index.docs)
        return render.citation_html(answer, i, n, rag.index.docs, whole=view == "article", raw=rag.index.raw)

    def new_conversation(self) -> tuple[list[dict], list[Turn], str, str]:
        """An empty chat, conversation, sources panel and question box."""
        return [], [], render.EMPTY_SOURCES, ""

    def list_articles(self, sort: str = "date", since: str = "", until: str = "", outlet: str = "") -> str:
        """The Corpus tab's article list."""
        return corpus_table(self.rag, sort, since, until, outlet)

    def upload(self, files: list | None, *listing: str) -> tuple[str | Update, str | Update, None]:
        """Add the uploaded files; the upload report, the article list, and an emptied upload box."""
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
        if not paths:
            return gr.skip(), gr.skip(), None
        lines = self.rag.add_files(paths, self.corpus_dir)
        return render.upload_status_html(lines), self.list_articles(*listing), None


@dataclass
class SettingsPanel:
    backend: gr.Radio
    top_k: gr.Slider
    api_group: gr.Group
    base_url: gr.Textbox
    api_model: gr.Textbox
    api_key: gr.Textbox
    since: gr.Textbox
    until: gr.Textbox
    as_of: gr.Textbox


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    question: gr.Textbox
    ask: gr.Button
    new: gr.Button
    sources: gr.HTML


@dataclass
class CorpusTab:
    tab: gr.Tab
    sort: gr.Dropdown
    outlet: gr.Textbox
    since: gr.Textbox
    until: gr.Textbox
    table: gr.HTML
    files: gr.File
    status: gr.HTML

    @property
    def listing(self) -> list[gr.components.Component]:
        """The controls the article list is chosen by, in :meth:`Handlers.list_articles`' order."""
        return [self.sort, self.since, self.until, self.outlet]


def build_app(rag_or_settings: RAG | Settings, *, corpus_dir: str | Path | None = None, warm: bool = True, concurrency: int = 4) -> gr.Blocks:
    """The Gradio app over an opened RAG (or the index named by ``settings.index_dir``)."""
    rag = rag_or_settings if isinstance(rag_or_settings, RAG) else RAG.open(rag_or_settings.index_dir, rag_or_settings)
    settings = rag.settings
    handlers = Handlers(rag, corpus_dir)
    if warm:
        threading.Thread(target=_warm, args=(rag,), name="rag-warm", daemon=True).start()
    with gr.Blocks(title="News QA · verified citations", analytics_enabled=False) as demo:
        conv = gr.State([])
        panel = _settings_panel(settings)
        with gr.Tabs():
            chat = _chat_tab()
            corpus = _corpus_tab(settings, handlers)
        _wire(handlers, conv, panel, chat, corpus)
    # a bounded queue: past it, a request is refused ("queue is full") instead of waiting without end
    demo.queue(default_concurrency_limit=concurrency, max_size=4 * settings.max_pending)
    demo.rag = rag  # for callers and tests
    return demo


def _settings_panel(settings: Settings) -> SettingsPanel:
    with gr.Sidebar(label="Settings", open=True, position="left", elem_id="rag-settings"):
        gr.Markdown("### Settings")
        backend = gr.Radio(BACKENDS, value=settings.llm, label="Answer backend", elem_id="rag-backend")
        top_k = gr.Slider(1, 20, value=settings.top_k, step=1, label="Passages to retrieve (top-k)", elem_id="rag-topk")
        with gr.Group(visible=settings.llm == "openai", elem_id="rag-api") as api_group:
            base_url = gr.Textbox(settings.openai_base_url, label="API base URL", elem_id="rag-base-url")
            api_model = gr.Textbox(settings.openai_model, label="API model", elem_id="rag-api-model")
            api_key = gr.Textbox(
                "", type="password", label="Your API key (for an endpoint the server does not list)", elem_id="rag-api-key"
            )
        with gr.Group(elem_id="rag-dates"):
            since = gr.Textbox("", label="Published from", placeholder="e.g. 2014 or 2014-03-25", elem_id="rag-since", max_lines=1)
            until = gr.Textbox(
                "", label="Published until", placeholder="e.g. 2014 or 2014-03", info="A year or month counts whole; undated articles are left out.",
                elem_id="rag-until", max_lines=1,
            )
            as_of = gr.Textbox(
                "", label="As of", placeholder="YYYY-MM-DD", info="The question's date: “this week” is the week before it.", elem_id="rag-as-of", max_lines=1
            )
        gr.Markdown(
            "Answers cite exact sentences of the articles. Sentences no source supports are marked "
            "*unsupported*. The server's API key is sent only to the endpoints its operator set; "
            "for any other URL, enter your own key.",
            elem_classes=["rag-side-note"],
        )
    return SettingsPanel(backend, top_k, api_group, base_url, api_model, api_key, since, until, as_of)


def _chat_tab() -> ChatTab:
    with gr.Tab("Chat", id="chat"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                chatbot = gr.Chatbot(
                    elem_id="rag-chat",
                    height=600,
                    show_label=False,
                    placeholder="Ask a question about the indexed news articles.",
                    group_consecutive_messages=False,
                    buttons=["copy", "copy_all"],  # no "share" to Hugging Face
                )
                with gr.Row(equal_height=True):
                    question = gr.Textbox(
                        placeholder="Ask about the articles, e.g. Why did ties between Iran and Hamas break down in 2012?",
                        show_label=False,
                        scale=6,
                        elem_id="rag-question",
                        max_lines=4,
                        autofocus=True,
                    )
                    ask = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="rag-ask")
                new = gr.Button("New conversation", size="sm", elem_id="rag-new")
            with gr.Column(scale=2, min_width=320):
                sources = gr.HTML(render.EMPTY_SOURCES, js_on_load=CITE_JS, elem_id="rag-sources-panel", padding=True)
    return ChatTab(chatbot, question, ask, new, sources)


def _corpus_tab(settings: Settings, handlers: Handlers) -> CorpusTab:
    with gr.Tab("Corpus", id="corpus") as tab:
        with gr.Row(equal_height=True, elem_id="rag-corpus-filters"):
            sort = gr.Dropdown([("Date", "date"), ("Outlet", "outlet"), ("Title", "title")], value="date", label="Sort by", elem_id="rag-list-sort")
            outlet = gr.Textbox("", label="Outlet", placeholder="part of its name", elem_id="rag-list-outlet", max_lines=1)
            since = gr.Textbox("", label="Published from", placeholder="e.g. 2014 or 2014-03-25", elem_id="rag-list-since", max_lines=1)
            until = gr.Textbox("", label="Published until", placeholder="e.g. 2014 or 2014-03", elem_id="rag-list-until", max_lines=1)
        table = gr.HTML(handlers.list_articles(), elem_id="rag-corpus-table")
        files = gr.File(
            file_count="multiple",
            label=f"Add articles: .txt, .md or .html (UTF-8, or UTF-16 with a byte-order mark), up to {settings.max_file_bytes // 1_000_000} MB each",
            elem_id="rag-upload",
            height=140,
        )
        status = gr.HTML("", elem_id="rag-upload-status")
    return CorpusTab(tab, sort, outlet, since, until, table, files, status)


def _wire(handlers: Handlers, conv: gr.State, panel: SettingsPanel, chat: ChatTab, corpus: CorpusTab) -> None:
    """Connect the controls' events to the handlers."""
    p = panel
    p.backend.change(lambda b: gr.update(visible=b == "openai"), p.backend, p.api_group, queue=False)
    answer_io = dict(
        fn=handlers.respond,
        inputs=[chat.question, conv, p.backend, p.top_k, p.base_url, p.api_model, p.api_key, p.since, p.until, p.as_of],
        outputs=[chat.chatbot, conv, chat.question, chat.sources],
    )
    chat.question.submit(**answer_io)
    chat.ask.click(**answer_io)
    chat.sources.click(handlers.show_source, [conv], [chat.sources])
    cleared = [chat.chatbot, conv, chat.sources, chat.question]
    chat.new.click(handlers.new_conversation, None, cleared, queue=False)
    chat.chatbot.clear(handlers.new_conversation, None, cleared, queue=False)  # its trash icon: same as "New conversation"
    listing, table = corpus.listing, corpus.table
    corpus.files.upload(handlers.upload, [corpus.files, *listing], [corpus.status, table, corpus.files], concurrency_limit=1, concurrency_id="index")
    corpus.tab.select(handlers.list_articles, listing, table)
    corpus.sort.change(handlers.list_articles, listing, table, queue=False)
    for box in (corpus.outlet, corpus.since, corpus.until):  # a date is applied when complete (Enter or leaving the box), not per keystroke
        box.submit(handlers.list_articles, listing, table, queue=False)
        box.blur(handlers.list_articles, listing, table, queue=False)


def _warm(rag: RAG) -> None:
    try:
        rag.warm()
    except Exception as exc:  # the first question reports it properly
        log.warning("could not load the model in advance: %s", exc)


def launch_options(settings: Settings) -> dict:
    """Keyword arguments for ``demo.launch`` that the UI needs (style, upload limit, no share link)."""
    return {
        "css": CSS_PATH.read_text(encoding="utf-8") if CSS_PATH.exists() else None,
        "theme": gr.themes.Soft(),
        "max_file_size": settings.max_file_bytes,
        "share": False,
        "footer_links": ["settings"],
    }


def launch(demo: gr.Blocks, settings: Settings, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True, quiet: bool = True) -> str:
    """Start the server; returns its URL (after it stops, when ``block``)."""
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=quiet, **launch_options(settings))
    except OSError as exc:  # Gradio's "Cannot find empty port", or an address this machine does not have
        raise RagError(_cannot_serve(host, port)) from exc
    url = f"http://{host}:{demo.server_port}/"
    if block:
        print(f"newsrag UI running at {url} (Ctrl+C to stop)", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"warning: listening on {host}: anyone who can reach this machine can use the UI and add articles", flush=True)
        try:
            demo.block_thread()
        finally:
            demo.close()
    return url


def _check_port(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise RagError(_cannot_serve(host, port)) from exc


def _cannot_serve(host: str, port: int) -> str:
    return f"cannot serve the UI on {host}:{port} (the port is taken or the address is not this machine's): choose another with --port/--host"


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Open the index named by ``settings`` and serve the chat UI until interrupted (``rag ui``)."""
    _check_port(host, port)  # before loading the models, so a taken port fails in a second, not after them
    demo = build_app(settings)
    launch(demo, settings, host, port, block=True)
