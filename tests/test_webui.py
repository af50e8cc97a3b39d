"""The web UI in a real browser: Debian's Chromium (headless) driven by Playwright for Python,
against a real server process with the bundled tiny model.

`make test` installs Chromium (apt) and Playwright (the `test` extra); Playwright's own browser
downloads are never used. Screenshots go to tests/artifacts/ (git-ignored); the ones of the
modes are also copied to docs/screenshots/.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from server_helpers import ROOT, http, running_server

pytestmark = pytest.mark.gpu  # every test here runs a server process on the GPU adapter

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                "(or: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is missing: `make test` installs it "
    "(or: pip install -e '.[test]')")
expect = sync_api.expect

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
MODEL = "tiny-rwkv-7v0-834K"
ARTIFACTS = ROOT / "tests" / "artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"
TIMEOUT_MS = 60_000

# Resolves once the text of the last element matching `selector` (a textarea's value, or the
# text of anything else) is non-empty and then longer than when first seen: text growing in
# place while it streams. State lives on `window`, keyed by `key`.
GROWS = """([selector, key]) => {
  const nodes = document.querySelectorAll(selector);
  const node = nodes[nodes.length - 1];
  if (!node) return false;
  const length = (node.tagName === "TEXTAREA" ? node.value : node.textContent).trim().length;
  const seen = (window.__grows ||= {});
  if (!length) return false;
  if (!(key in seen)) seen[key] = length;
  return length > seen[key];
}"""


def shot(page, name: str, docs: bool = False) -> None:
    """tests/artifacts/<name>.png; with docs and UPDATE_SCREENSHOTS=1 in the environment, also
    docs/screenshots/<name>.png (the README's pictures; plain test runs leave them alone)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")


def status(base: str) -> dict:
    code, body = http("GET", base + "/api/status", timeout=10)
    assert code == 200, body
    return body


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def set_fields(page, **values) -> None:
    """Type into the sampler panel: set_fields(page, max_tokens=40, temperature=0.35)."""
    for key, value in values.items():
        field = page.get_by_test_id("setting-" + key.replace("_", "-"))
        field.fill(str(value))
        expect(field).to_have_value(str(value))


def stored_settings(page) -> dict:
    return json.loads(page.evaluate("localStorage.getItem('ai00-trio:settings') || '{}'"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webui-server")) as base:
        yield base


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data dir
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport=DESKTOP, device_scale_factor=1, color_scheme="light", locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)  # the tiny model on a software GPU can be slow
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(request, server, browser_context):
    """A fresh tab on the UI with empty localStorage, the model id already loaded."""
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/health")  # same origin, no UI script: clear what earlier tests stored
    page.evaluate("localStorage.clear()")
    page.goto(server + "/")
    expect(page.get_by_test_id("header-model")).to_have_text(MODEL)
    yield page
    try:
        shot(page, f"end-{request.node.name}")
    finally:
        page.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def assistant_body(page):
    return page.get_by_test_id("message-assistant").last.get_by_test_id("message-content")


def test_chat_streams_into_an_assistant_bubble(page, server):
    set_fields(page, max_tokens=150, temperature=0.35, top_p=0.9)
    box = page.get_by_test_id("chat-input")
    box.fill("Tell me about the sea")
    box.press("Enter")
    expect(page.get_by_test_id("chat-stop")).to_be_visible()
    expect(page.get_by_test_id("chat-send")).to_be_hidden()
    # Streamed: text appears in the bubble and grows while the bubble is still streaming.
    page.wait_for_function(GROWS, arg=['[data-testid="message-assistant"] .msg-body.streaming', "chat"],
                           timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    expect(page.get_by_test_id("chat-stop")).to_be_hidden()

    expect(page.get_by_test_id("message-user")).to_have_count(1)
    expect(page.get_by_test_id("message-user").get_by_test_id("message-content")).to_have_text("Tell me about the sea")
    expect(page.get_by_test_id("message-assistant")).to_have_count(1)
    assert assistant_body(page).inner_text().strip()
    assert not page.locator(".msg-body.streaming").count()
    stats = page.get_by_test_id("message-assistant").get_by_test_id("message-stats").inner_text()
    match = re.match(r"(\d+) tokens?", stats)
    assert match and 0 < int(match.group(1)) <= 150, stats
    expect(page.get_by_test_id("chat-error")).to_be_hidden()
    expect(page.get_by_test_id("chat-input")).to_have_value("")
    shot(page, "chat", docs=True)


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_mid_stream_frees_the_server_slot(page, server, how):
    wait_until(lambda: status(server)["queue"]["active"] == 0, 10, "an idle server")
    set_fields(page, max_tokens=2000)
    page.get_by_test_id("chat-input").fill("Write a very long story")
    page.get_by_test_id("chat-send").click()
    page.wait_for_function(GROWS, arg=['[data-testid="message-assistant"] .msg-body.streaming', "stop"],
                           timeout=TIMEOUT_MS)
    assert status(server)["queue"]["active"] == 1  # the request holds a slot while it streams
    if how == "button":
        page.get_by_test_id("chat-stop").click()
    else:
        page.get_by_test_id("chat-input").press("Escape")
    expect(page.get_by_test_id("chat-stop")).to_be_hidden(timeout=5000)
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    stats = page.get_by_test_id("message-assistant").get_by_test_id("message-stats")
    expect(stats).to_contain_text("stopped")
    tokens = int(re.match(r"(\d+) tokens?", stats.inner_text()).group(1))
    assert 0 < tokens < 2000
    text = assistant_body(page).inner_text()
    # The server saw the disconnect and gave the slot back.
    wait_until(lambda: status(server)["queue"]["active"] == 0, 5, "queue.active == 0 after Stop")
    assert assistant_body(page).inner_text() == text  # and nothing more arrived
    expect(page.get_by_test_id("chat-error")).to_be_hidden()


def test_write_mode_continues_text_in_place(page):
    set_fields(page, max_tokens=120, temperature=0.35, top_p=0.9)
    page.get_by_test_id("tab-continue").click()
    expect(page.locator("#view-continue")).to_be_visible()
    expect(page.locator("#view-chat")).to_be_hidden()
    prompt = "Once upon a time, in a small village by the sea,"
    text = page.get_by_test_id("continue-text")
    text.fill(prompt)
    page.get_by_test_id("continue-go").click()
    expect(page.get_by_test_id("continue-stop")).to_be_visible()
    page.wait_for_function(GROWS, arg=['textarea[data-testid="continue-text"].generating', "write"],
                           timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("continue-go")).to_be_visible()
    expect(page.get_by_test_id("continue-stop")).to_be_hidden()
    value = text.input_value()
    assert value.startswith(prompt) and len(value) > len(prompt)
    expect(page.get_by_test_id("continue-stats")).to_have_text(re.compile(r"^\d+ tokens"))
    expect(page.get_by_test_id("continue-error")).to_be_hidden()
    expect(page.get_by_test_id("continue-undo")).to_be_enabled()
    shot(page, "write", docs=True)
    page.get_by_test_id("continue-undo").click()
    expect(text).to_have_value(prompt)


def test_paper_outline_then_sections_then_document(page):
    set_fields(page, max_tokens=40, temperature=0.35, top_p=0.9)
    page.get_by_test_id("tab-paper").click()
    title = "Linear Attention Revisited"
    page.get_by_test_id("paper-title").fill(title)
    page.get_by_test_id("paper-count").fill("3")
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions") and r.method == "POST") as outline:
        page.get_by_test_id("paper-outline").click()
    body = outline.value.post_data_json
    assert body["max_tokens"] == 32 * 3 + 64 and title in body["messages"][0]["content"]
    expect(page.get_by_test_id("paper-stop")).to_be_hidden(timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("paper-outline")).to_be_enabled()
    # The tiny model rarely writes real headings: whatever it gave is parsed (at most 3 lines),
    # then the outline is edited by hand, as a user would.
    stats = page.get_by_test_id("paper-stats")
    expect(stats).to_have_text(re.compile(r"^([1-3]) sections?: edit them freely|^The model gave no usable headings"))
    # headings are joined by "\n" (str.splitlines would also split on \x1c, \x85, ... in model output)
    given = [line for line in page.get_by_test_id("paper-outline-text").input_value().split("\n") if line]
    number = re.match(r"(\d)", stats.inner_text())
    assert len(given) == (int(number.group(1)) if number else 0)
    headings = ["Background", "Method", "Results"]
    page.get_by_test_id("paper-outline-text").fill("\n".join(headings))

    requests = []
    page.on("request", lambda r: requests.append(r) if r.url.endswith("/v1/chat/completions") else None)
    page.get_by_test_id("paper-write").click()
    cards = page.get_by_test_id("paper-section")
    expect(cards).to_have_count(3)
    for i, heading in enumerate(headings):
        card = cards.nth(i)
        expect(card.locator("h3")).to_have_text(f"{i + 1}. {heading}")
        expect(card.get_by_test_id("paper-section-status")).to_have_text(re.compile(r"^(done|max tokens)$"),
                                                                          timeout=TIMEOUT_MS)
    assert len(requests) == 3
    assert [r.post_data_json["max_tokens"] for r in requests] == [40, 40, 40]  # the sampler panel's
    expect(page.get_by_test_id("paper-stop")).to_be_hidden()
    expect(stats).to_have_text(re.compile(r"^3 sections in parallel · \d+ tokens in"))
    expect(stats).not_to_contain_text("failed")
    panel = page.get_by_test_id("paper-document-panel")
    expect(panel).to_be_visible()
    document = page.get_by_test_id("paper-document")
    expect(document.locator("h1")).to_have_text(title)
    expect(document.locator("h2")).to_have_text(headings)
    assert len(document.inner_text()) > len(title) + sum(map(len, headings))
    shot(page, "paper", docs=True)


def test_sampler_settings_go_into_the_request(page):
    set_fields(page, temperature=0.35, top_p=0.9, max_tokens=16)
    sent = []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" else None)
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions") and r.method == "POST") as info:
        page.get_by_test_id("chat-input").fill("Hi")
        page.get_by_test_id("chat-input").press("Enter")
    body = info.value.post_data_json
    assert body["temperature"] == 0.35 and body["top_p"] == 0.9 and body["max_tokens"] == 16
    assert body["model"] == MODEL and body["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert info.value.response().status == 200
    expect(page.get_by_test_id("chat-send")).to_be_visible(timeout=TIMEOUT_MS)
    assert len(sent) == 1


def test_status_tab_shows_model_and_adapter(page, server):
    adapter = status(server)["adapter"]
    page.get_by_test_id("tab-status").click()
    expect(page.get_by_test_id("status-model-version")).to_have_text("v7")
    expect(page.get_by_test_id("status-model-name")).to_have_text(MODEL)
    expect(page.get_by_test_id("status-adapter-name")).to_have_text(adapter["name"])
    expect(page.get_by_test_id("status-adapter-backend")).to_have_text(adapter["backend"])
    expect(page.get_by_test_id("status-models")).to_have_text(MODEL)
    expect(page.get_by_test_id("status-queue-max")).to_have_text("8")
    expect(page.get_by_test_id("status-queue-active")).to_have_text("0")
    expect(page.get_by_test_id("status-error")).to_be_hidden()
    shot(page, "status", docs=True)


def test_settings_persist_across_reload(page, server):
    set_fields(page, temperature=0.35, top_p=0.9, max_tokens=77)
    page.get_by_test_id("setting-stop").fill("\\n\\nUser:")
    page.get_by_test_id("tab-continue").click()
    assert stored_settings(page)["temperature"] == 0.35
    page.goto(server + "/")  # no hash: the tab comes from localStorage too
    expect(page.get_by_test_id("header-model")).to_have_text(MODEL)
    expect(page.get_by_test_id("tab-continue")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#view-continue")).to_be_visible()
    expect(page.get_by_test_id("setting-temperature")).to_have_value("0.35")
    expect(page.get_by_test_id("setting-top-p")).to_have_value("0.9")
    expect(page.get_by_test_id("setting-max-tokens")).to_have_value("77")
    expect(page.get_by_test_id("setting-top-k")).to_have_value("128")  # untouched: the default
    expect(page.get_by_test_id("setting-stop")).to_have_value("\\n\\nUser:")
    page.get_by_test_id("setting-reset").click()
    expect(page.get_by_test_id("setting-temperature")).to_have_value("1")
    page.reload()
    expect(page.get_by_test_id("setting-temperature")).to_have_value("1")
    expect(page.get_by_test_id("setting-max-tokens")).to_have_value("1024")
