"""The dashboard page in a real browser: Debian's headless Chromium, driven by Playwright's Python package.

The router runs against the simulator; the page is opened with every request to anywhere but the router
blocked (and recorded), routed requests are sent, and the decisions list, the model rows and a job's
progress must update in the DOM within a few seconds. A screenshot is kept as a test artefact.

``.ci/run`` installs the ``chromium`` package; this test is skipped (saying why) only when that browser
is missing outside CI. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import VIBE, chat_body, wait_for
from playwright.sync_api import expect, sync_playwright
from test_events import KEY, secured

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FEW_SECONDS = 5000  # ms


@pytest.fixture
def browser_context(tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium); CI installs it and runs this test")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def tokens(progress: str) -> int:
    """The estimated token count in a running job's progress cell ("≈ 120 tokens · 3.1 s")."""
    found = re.search(r"≈ (\d+) tokens", progress)
    return int(found.group(1)) if found else 0


def test_the_dashboard_follows_the_router_live(stack_factory, browser_context, tmp_path):
    stack = stack_factory(secured(), sim_kw={"tokens_per_second": 20, "reply_tokens": 80})  # a job of about 4 s
    origin = f"http://127.0.0.1:{stack.port}/"
    requested: list[str] = []
    blocked: list[str] = []
    problems: list[str] = []
    page = browser_context.new_page()

    def only_the_router(route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(origin):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_the_router)
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # Keys are required here: the page says so, takes one, and keeps it for the tab.
    page.goto(stack.url + "/ui/")
    expect(page.locator("#conn")).to_have_text(re.compile("^key needed"), timeout=FEW_SECONDS)
    page.fill("#key", KEY)
    page.click("#keyform button[type=submit]")
    expect(page.locator("#conn")).to_have_text("live", timeout=FEW_SECONDS)
    assert page.evaluate("sessionStorage.getItem('oar-api-key')") == KEY and page.input_value("#key") == ""
    expect(page.locator("#models tbody tr")).to_have_count(4, timeout=FEW_SECONDS)
    vibe = page.locator(f'#models tr[data-model="{VIBE}"] td')
    assert vibe.nth(1).inner_text() == "no"

    auth = {"authorization": f"Bearer {KEY}"}
    short = {**chat_body("Hello there"), "max_tokens": 4}  # measures the model's speed for the estimate
    assert stack.request("POST", "/v1/chat/completions", short, headers=auth).status == 200
    job_id = stack.request("POST", "/v1/chat/completions", chat_body("Hello again", mode="async"),
                           headers=auth).json()["id"]

    expect(page.locator("#decisions tbody tr")).to_have_count(2, timeout=FEW_SECONDS)
    newest = page.locator("#decisions tbody tr").first.locator("td")
    assert [newest.nth(i).inner_text() for i in (1, 3, 4, 7)] == ["openai", VIBE, "async", "202"]
    expect(vibe.nth(1)).to_have_text("100% gpu", timeout=FEW_SECONDS)
    job = page.locator(f'#jobs tr[data-job="{job_id}"] td')
    expect(job.nth(4)).to_have_text(re.compile(r"≈ [1-9]\d* tokens"), timeout=FEW_SECONDS)
    before = tokens(job.nth(4).inner_text())
    wait_for(lambda: tokens(job.nth(4).inner_text()) > before, timeout=FEW_SECONDS / 1000)
    assert job.nth(1).inner_text() == "running" and vibe.nth(3).inner_text() == "1 / 2"
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\ndashboard screenshot: {shot}")

    # A decision opens its explanation, fetched with the key in a header.
    page.locator("#decisions tbody tr").last.click()
    expect(page.locator("#explain table.candidates")).to_be_visible(timeout=FEW_SECONDS)
    assert "Selected" in page.inner_text("#explain") and VIBE in page.inner_text("#explain")
    expect(job.nth(1)).to_have_text("succeeded", timeout=FEW_SECONDS)

    # On a phone, in the dark: one column, nothing wider than the screen, dark colours.
    page.emulate_media(color_scheme="dark")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert sum(map(int, re.findall(r"\d+", background)[:3])) < 120, background
    page.screenshot(path=str(tmp_path / "dashboard-phone-dark.png"), full_page=True)

    assert blocked == []
    # No script error and no CSP refusal; the one message is the browser noting the keyless first try.
    assert problems == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
    assert requested and all(url.startswith(origin) for url in requested)
    assert not [url for url in requested if KEY in url]
    wait_for(lambda: stack.app.events.subscribers)
    if os.environ.get("OAR_SCREENSHOT_DIR"):  # for CI artefact collection
        shutil.copy(shot, Path(os.environ["OAR_SCREENSHOT_DIR"]) / "dashboard.png")
