"""`rag bench latency --one-shot`: fresh `rag ask` processes, in their own process and through a `rag serve`."""

from __future__ import annotations

from rag.bench.latency import SERVED, _one_shot_lines, one_shot
from rag.settings import Settings

from .conftest import Q2012


def test_one_shot_times_rag_ask_with_and_without_a_server_and_the_answers_match(seed_index):
    settings = Settings.from_env(index_dir=str(seed_index), local_model="smollm")
    shots = one_shot(settings, [Q2012], ("local", "extractive"))
    assert set(shots) == {"local", "extractive", "local" + SERVED, "extractive" + SERVED}
    for backend in ("local", "extractive"):
        assert shots[backend + SERVED]["identical"] == 1  # the server's answer is the one a process of its own gives
        assert shots[backend + SERVED]["total_p50_s"] > 0 and shots[backend]["total_p50_s"] > 0
    table = "\n".join(_one_shot_lines(shots, 1, warm_s=2.0))
    assert "| local, warm (in this process) |" in table and "| local via rag serve |" in table and "| 1/1 |" in table
