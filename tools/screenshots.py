"""Write the README's screenshots: docs/dashboard.png (the page) and docs/oar-top.png (``oar top --once``).

    python tools/screenshots.py

The bundled ``serve --simulate`` profile runs in this process (its simulator paced at 25 tokens/s, so jobs
take a while), some routed traffic goes through it, and Debian's Chromium (driven by Playwright, as in
tests/test_dashboard_browser.py) photographs the page; the ``oar top`` frame is drawn in the same browser
as terminal text. Nothing is fetched from outside.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ollama_agent_router.app import App  # noqa: E402
from ollama_agent_router.commands.serve import _simulated, bundled_config  # noqa: E402
from ollama_agent_router.log import Logger  # noqa: E402
from ollama_agent_router.simulator.server import OllamaSimulator  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPTS = [
    ("Fix this bug: my Python loop raises IndexError on the last item", {}),
    ("Summarize the following meeting notes in three bullet points", {}),
    ("Review this diff for race conditions and suggest improvements", {}),
    ("Hi! What is the capital of Portugal?", {}),
    ("Write a function that parses ISO dates and handles time zones", {}),
    ("Triage this support ticket: the app crashes at login", {"mode": "async"}),
    ("Summarize this 40-page design document for an executive", {"mode": "async"}),
]


def start_router() -> tuple[asyncio.AbstractEventLoop, App, int]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def boot() -> tuple[App, int]:
        cfg = bundled_config()
        sim = OllamaSimulator.from_config(cfg, tokens_per_second=25.0, reply_tokens=160, log=Logger("error"))
        await sim.start()
        app = App(_simulated(cfg, sim.url), log=Logger("error"), gpu_backend=sim.gpu_backend())
        return app, await app.start("127.0.0.1", 0)

    app, port = asyncio.run_coroutine_threadsafe(boot(), loop).result(30)
    return loop, app, port


def chat(port: int, content: str, router: dict) -> int:
    body = {"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 24}
    if router:
        body["router"] = router
        del body["max_tokens"]  # a job writes its whole reply
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def top_frame(port: int) -> str:
    env = dict(os.environ, COLUMNS="118", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "ollama_agent_router", "-u", f"http://127.0.0.1:{port}", "top",
                           "--once"], env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout


def main() -> None:
    from playwright.sync_api import sync_playwright

    loop, app, port = start_router()
    docs = os.path.join(ROOT, "docs")
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                        viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(f"http://127.0.0.1:{port}/")
                   else r.abort())
        page.goto(f"http://127.0.0.1:{port}/ui/")
        page.wait_for_selector("#models tbody tr")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: chat(port, *p), PROMPTS[:5]))
            jobs = [pool.submit(chat, port, *p) for p in PROMPTS[5:]]
            [j.result() for j in jobs]
            time.sleep(3)  # let the jobs run a few seconds, so their progress shows
            page.screenshot(path=os.path.join(docs, "dashboard.png"), full_page=True)
            text = top_frame(port)
        page.set_viewport_size({"width": 1000, "height": 600})
        page.set_content("<body style='margin:0;background:#0d1117'><pre style='margin:0;padding:16px;color:#e6edf3;"
                         "font:13px/1.35 DejaVu Sans Mono,monospace'>" + html.escape(text) + "</pre></body>")
        page.locator("pre").screenshot(path=os.path.join(docs, "oar-top.png"))
        context.close()
    asyncio.run_coroutine_threadsafe(app.stop(1.0), loop).result(30)
    print("wrote docs/dashboard.png and docs/oar-top.png")


if __name__ == "__main__":
    main()
