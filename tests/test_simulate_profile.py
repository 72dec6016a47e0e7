"""The bundled ``--simulate`` profile: its embedding model is one for the simulator and for the router, so
embeddings answer out of the box."""

from __future__ import annotations

import json
import sys

from sim_support import request, run
from test_cli import Served, cli_env, post_json

from ollama_agent_router.commands.serve import bundled_config
from ollama_agent_router.config.schema import is_embedding_model
from ollama_agent_router.simulator.server import OllamaSimulator

EMBEDDER = "nomic-embed-text"


def test_the_simulator_serves_the_profiles_embedder_as_one() -> None:
    cfg = bundled_config()
    assert [m.name for m in cfg.models if is_embedding_model(m)] == [EMBEDDER]

    async def go() -> None:
        sim = OllamaSimulator.from_config(cfg)
        await sim.start()
        try:
            shown = (await request(sim, "POST", "/api/show", {"model": EMBEDDER})).json()
            assert shown["capabilities"] == ["embedding"]
            embed = (await request(sim, "POST", "/api/embed", {"model": EMBEDDER, "input": ["a", "b"]})).json()
            assert len(embed["embeddings"]) == 2 and len(embed["embeddings"][0]) == 384
            r = await request(sim, "POST", "/v1/embeddings", {"model": EMBEDDER, "input": "a"})
            assert r.status == 200 and r.json()["data"][0]["embedding"] == embed["embeddings"][0]
            r = await request(sim, "POST", "/api/chat", {"model": EMBEDDER, "messages": [{"role": "user", "content": "x"}]})
            assert (r.status, r.json()) == (400, {"error": f'"{EMBEDDER}" does not support chat'})
        finally:
            await sim.stop()
    run(go())


def test_serve_simulate_answers_embeddings_without_a_config(tmp_path) -> None:
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "--simulate", "--port", "0"],
                    cwd=tmp_path, env=cli_env(HOME=str(tmp_path)))
    try:
        status, body = post_json(served.port, "/v1/embeddings", {"model": "auto", "input": ["hello", "world"]})
        assert status == 200 and [d["index"] for d in body["data"]] == [0, 1], json.dumps(body)[:300]
        assert body["model"] == EMBEDDER and len(body["data"][0]["embedding"]) == 384
        status, body = post_json(served.port, "/api/embed", {"model": "auto", "input": "hello"})
        assert status == 200 and len(body["embeddings"]) == 1, json.dumps(body)[:300]
    finally:
        assert served.stop() == 0
