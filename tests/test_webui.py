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
from contextlib import contextmanager
from pathlib import Path

import pytest

import numpy as np

from ai00_trio.engine.formats import read_checkpoint
from ai00_trio.engine.formats.safetensors_writer import write_safetensors
from ai00_trio.engine.info import detect_model
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
MODEL_FILE = ROOT / "assets" / "models" / f"{MODEL}.st"
OTHER_MODEL = ROOT / "tests" / "data" / "tiny-rwkv-5v2-730K.st"
STATE_ID = "5e1f0000-0000-4000-8000-00000000a11c"
ADMIN_KEY = "webui-admin-key-0123456789"
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


def write_state_file(path: Path) -> None:
    """A state-tuning file for the tiny model: one small random time_state per layer."""
    info = detect_model(read_checkpoint(MODEL_FILE))
    rng = np.random.default_rng(7)
    write_safetensors(path, {
        f"blocks.{layer}.att.time_state":
            rng.normal(0, 0.1, (info.n_head, info.head_size, info.head_size)).astype(np.float32)
        for layer in range(info.n_layer)})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The tiny model with one initial state to pick, and an admin key for the Models card."""
    tmp = tmp_path_factory.mktemp("webui-server")
    folder = tmp / "models"
    folder.mkdir()
    shutil.copy(MODEL_FILE, folder / MODEL_FILE.name)
    write_state_file(folder / "pirate.st")
    sections = (f'[[state]]\npath = "pirate.st"\nname = "pirate"\nid = "{STATE_ID}"\n'
                f'[admin]\nkeys = ["{ADMIN_KEY}"]\n')
    with running_server(tmp, {"path": str(folder)}, extra_sections=sections) as base:
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


@contextmanager
def ui_page(browser_context, base: str, name: str, allowed: re.Pattern | None = None):
    """A fresh tab on the UI at `base` with empty localStorage, the model id already loaded;
    on leaving, no errors in the page or its console, but for console lines `allowed` matches."""
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base + "/health")  # same origin, no UI script: clear what earlier tests stored
    page.evaluate("localStorage.clear(); sessionStorage.clear()")
    # Chromium asks for /favicon.ico on the JSON /health page (a 404); the UI's icon is inline.
    page.on("console", lambda message: errors.append(f"{message.text} ({message.location.get('url')})")
            if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico")
            and not (allowed and allowed.search(message.text)) else None)
    page.goto(base + "/")
    expect(page.get_by_test_id("header-model")).to_have_text(MODEL)
    yield page
    try:
        shot(page, f"end-{name}")
    finally:
        page.close()
    assert not errors, f"errors in the page or its console: {errors}"


@pytest.fixture
def page(request, server, browser_context):
    with ui_page(browser_context, server, request.node.name) as page:
        yield page


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
    with page.expect_request("**/v1/completions") as info:
        page.get_by_test_id("continue-go").click()
    key = json.loads(page.evaluate("localStorage.getItem('ai00-trio:continuation-id')"))
    assert key and info.value.headers["x-conversation-id"] == key
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
    active = json.loads(page.evaluate("localStorage.getItem('ai00-trio:conversations')"))["active"]
    assert active and info.value.headers["x-conversation-id"] == active  # for a load balancer's affinity
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
    expect(page.get_by_test_id("status-adapter-executors")).to_have_count(0)


def test_status_lists_several_executors(browser_context, tmp_path):
    """`[adapter] count = 2`: the adapter card counts each executor's busy slots; one executor shows no such row."""
    with running_server(tmp_path, {"max_batch": 4}, extra_sections="[adapter]\ncount = 2\n") as base:
        with ui_page(browser_context, base, "status-executors") as page:
            page.get_by_test_id("tab-status").click()
            expect(page.get_by_test_id("status-adapter-executors")).to_have_text("0/4 · 0/4 slots busy")
            expect(page.get_by_test_id("status-queue-max")).to_have_text("8")


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
    expect(page.get_by_test_id("setting-max-tokens")).to_have_value("128")


def chat_request(page, text: str) -> dict:
    """Send `text` from the composer; the body of the chat request it made (the answer is awaited)."""
    with page.expect_request(lambda r: r.url.endswith("/v1/chat/completions") and r.method == "POST") as info:
        page.get_by_test_id("chat-input").fill(text)
        page.get_by_test_id("chat-input").press("Enter")
    expect(page.get_by_test_id("chat-send")).to_be_visible()
    expect(page.get_by_test_id("chat-error")).to_be_hidden()
    return info.value.post_data_json


def set_system_prompt(page, text: str) -> None:
    setup = page.get_by_test_id("chat-setup")
    if setup.get_attribute("open") is None:
        setup.locator("summary").click()
    page.get_by_test_id("system-prompt").fill(text)


def test_conversations_keep_their_prompt_settings_and_state_across_reload(page, server):
    items = page.get_by_test_id("conversation-item")
    expect(items).to_have_count(1)
    set_fields(page, max_tokens=8, temperature=0.35)
    set_system_prompt(page, "You are a pirate.")
    page.get_by_test_id("state-picker").select_option(STATE_ID)
    first = chat_request(page, "Ahoy")
    assert first["messages"] == [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Ahoy"}]
    assert first["state"] == STATE_ID and first["temperature"] == 0.35 and first["max_tokens"] == 8

    page.get_by_test_id("conversation-new").click()
    expect(items).to_have_count(2)
    expect(page.get_by_test_id("system-prompt")).to_have_value("")
    expect(page.get_by_test_id("chat-empty")).to_be_visible()
    set_system_prompt(page, "You are a librarian.")
    page.get_by_test_id("state-picker").select_option("")
    set_fields(page, temperature=0.8)
    second = chat_request(page, "Hello")
    assert second["messages"][0] == {"role": "system", "content": "You are a librarian."}
    assert "state" not in second and second["temperature"] == 0.8 and second["max_tokens"] == 8

    page.reload()
    expect(items).to_have_count(2)
    expect(items.first.get_by_test_id("conversation-title")).to_contain_text("Hello")  # most recent first
    expect(page.get_by_test_id("system-prompt")).to_have_value("You are a librarian.")
    items.filter(has_text="Ahoy").get_by_test_id("conversation-title").click()
    expect(page.get_by_test_id("system-prompt")).to_have_value("You are a pirate.")
    expect(page.get_by_test_id("setting-temperature")).to_have_value("0.35")
    expect(page.get_by_test_id("state-picker")).to_have_value(STATE_ID)
    expect(page.get_by_test_id("message-user").get_by_test_id("message-content")).to_have_text(["Ahoy"])
    again = chat_request(page, "Where is the gold?")
    assert [m["role"] for m in again["messages"]][:3] == ["system", "user", "assistant"]
    assert again["messages"][0]["content"] == "You are a pirate." and again["state"] == STATE_ID

    # search, rename, delete (a second click confirms)
    page.get_by_test_id("conversation-search").fill("hello")
    expect(items).to_have_count(1)
    page.get_by_test_id("conversation-search").fill("")
    expect(items).to_have_count(2)
    pirate = items.filter(has_text="Ahoy")
    pirate.get_by_test_id("conversation-rename").click()
    page.get_by_test_id("conversation-rename-input").fill("Treasure")
    page.get_by_test_id("conversation-rename-input").press("Enter")
    expect(items.filter(has_text="Treasure")).to_have_count(1)
    shot(page, "conversations", docs=True)

    # export, delete both, import the export back
    with page.expect_download() as download:
        page.get_by_test_id("conversation-export").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert {c["system"] for c in exported["conversations"]} == {"You are a pirate.", "You are a librarian."}
    for _ in range(2):
        items.first.get_by_test_id("conversation-delete").click()
        expect(items.first.get_by_test_id("conversation-delete")).to_have_text("Delete?")
        items.first.get_by_test_id("conversation-delete").click()
    expect(items).to_have_count(1)  # never empty: a fresh conversation is left
    expect(page.get_by_test_id("chat-empty")).to_be_visible()
    page.get_by_test_id("conversation-import-file").set_input_files(download.value.path())
    expect(page.get_by_test_id("conversation-note")).to_have_text("Imported 2 conversations.")
    expect(items).to_have_count(3)
    items.filter(has_text="Treasure").get_by_test_id("conversation-title").click()
    expect(page.get_by_test_id("system-prompt")).to_have_value("You are a pirate.")
    expect(page.get_by_test_id("message-user")).to_have_count(2)
    page.emulate_media(color_scheme="dark")
    shot(page, "conversations-dark", docs=True)


def test_panels_collapse_at_desktop_width(page, server):
    assert page.viewport_size["width"] == 1280
    panel, chats = page.get_by_test_id("settings-panel"), page.get_by_test_id("conversation-panel")
    expect(panel).to_be_visible()
    expect(chats).to_be_visible()
    wide = page.get_by_test_id("chat-messages").bounding_box()["width"]
    page.get_by_test_id("settings-toggle").click()
    page.get_by_test_id("conversations-toggle").click()
    expect(panel).to_be_hidden()
    expect(chats).to_be_hidden()
    expect(page.get_by_test_id("settings-toggle")).to_have_attribute("aria-expanded", "false")
    assert page.get_by_test_id("chat-messages").bounding_box()["width"] > wide + 500
    shot(page, "chat-collapsed", docs=True)
    page.reload()
    expect(panel).to_be_hidden()  # remembered
    page.get_by_test_id("settings-toggle").click()
    expect(panel).to_be_visible()
    page.get_by_test_id("settings-close").click()
    expect(panel).to_be_hidden()
    page.get_by_test_id("settings-toggle").click()
    page.get_by_test_id("conversations-toggle").click()
    expect(chats).to_be_visible()


def test_enter_queues_while_streaming_and_escape_stops(page, server):
    set_fields(page, max_tokens=2000)
    box = page.get_by_test_id("chat-input")
    box.fill("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")  # Shift+Enter is a new line, not a send
    expect(page.get_by_test_id("message-user")).to_have_count(0)
    box.fill("Write a very long story")  # the prompt the stop tests use: the tiny model goes on and on
    requests = []
    page.on("request", lambda r: requests.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)
    box.press("Enter")
    page.wait_for_function(GROWS, arg=['[data-testid="message-assistant"] .msg-body.streaming', "queue"],
                           timeout=TIMEOUT_MS)
    box.fill("next question")
    box.press("Enter")
    expect(page.get_by_test_id("chat-queued")).to_be_visible()
    expect(page.get_by_test_id("chat-queued-text")).to_have_text("next question")
    expect(box).to_have_value("")
    assert len(requests) == 1
    shot(page, "chat-queued", docs=True)
    box.press("Escape")  # stops the first answer; the queued message goes out at once
    expect(page.get_by_test_id("chat-queued")).to_be_hidden()
    expect(page.get_by_test_id("message-user").get_by_test_id("message-content")).to_have_text(["Write a very long story", "next question"])
    wait_until(lambda: len(requests) == 2, 10, "the queued message's request")
    assert requests[1]["messages"][-1] == {"role": "user", "content": "next question"}
    assert requests[1]["messages"][1]["role"] == "assistant"  # the stopped answer, as far as it got
    expect(page.get_by_test_id("message-assistant").first.get_by_test_id("message-stats")).to_contain_text("stopped")
    page.wait_for_function(GROWS, arg=['[data-testid="message-assistant"] .msg-body.streaming', "queue2"],
                           timeout=TIMEOUT_MS)
    box.press("Escape")
    expect(page.get_by_test_id("chat-stop")).to_be_hidden(timeout=5000)
    wait_until(lambda: status(server)["queue"]["active"] == 0, 5, "queue.active == 0 after Esc")


def test_model_and_state_pickers_list_what_the_server_serves(page, server):
    code, models = http("GET", server + "/v1/models")
    assert code == 200
    picker = page.get_by_test_id("model-picker")
    expect(picker.locator("option")).to_have_text([m["id"] for m in models["data"]])
    expect(page.get_by_test_id("model-hint")).to_contain_text("RWKV v7")
    states = page.get_by_test_id("state-picker").locator("option")
    expect(states).to_have_text(["Model default (no state)", "pirate"])
    page.get_by_test_id("state-picker").select_option(label="pirate")
    body = chat_request(page, "Hi")
    assert body["state"] == STATE_ID and body["model"] == MODEL
    expect(page.get_by_test_id("toy-notice")).to_contain_text("Toy model: tiny-rwkv-7v0-834K")
    expect(page.get_by_test_id("toy-notice")).to_contain_text("python -m ai00_trio serve --model")
    page.get_by_test_id("toy-notice-close").click()
    page.reload()
    expect(page.get_by_test_id("header-model")).to_have_text(MODEL)
    expect(page.get_by_test_id("toy-notice")).to_be_hidden()


def test_status_is_honest_while_idle_and_lists_models_with_an_admin_key(page, server):
    wait_until(lambda: status(server)["queue"]["active"] == 0, 10, "an idle server")
    page.get_by_test_id("tab-status").click()
    expect(page.get_by_test_id("status-queue-active")).to_have_text("0")
    expect(page.get_by_test_id("status-tps-server")).to_have_text("idle")
    expect(page.get_by_test_id("status-tps-unit")).to_be_hidden()
    expect(page.get_by_test_id("status-tps-label")).to_contain_text("decode rate")
    expect(page.get_by_test_id("status-tps-client")).to_have_text("no generation running")
    expect(page.get_by_test_id("models-body")).to_be_hidden()
    key = page.get_by_test_id("admin-key")
    key.fill(ADMIN_KEY)
    key.press("Enter")
    expect(page.get_by_test_id("models-loaded-path")).to_have_text(MODEL_FILE.name)
    expect(page.get_by_test_id("models-state-name")).to_have_text(["pirate"])
    files = page.get_by_test_id("models-file")
    expect(files.get_by_test_id("models-file-name")).to_have_text(["pirate.st", MODEL_FILE.name])
    expect(files.filter(has_text=MODEL_FILE.name).get_by_test_id("models-load")).to_have_text("Reload")
    expect(files.filter(has_text="pirate.st")).to_contain_text("not a model")
    expect(page.get_by_test_id("models-error")).to_be_hidden()
    page.get_by_test_id("models-panel").evaluate("card => card.scrollIntoView({block: 'start'})")
    shot(page, "models", docs=True)
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(300)  # the buttons' background transition (0.12 s) ends first
    shot(page, "models-dark", docs=True)


def test_tool_calls_are_shown_with_their_arguments(page):
    """A streamed answer that calls a tool (served by page.route: the tiny model makes no real calls)."""
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=sse))
    page.get_by_test_id("chat-setup").locator("summary").click()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    page.get_by_test_id("chat-tools").fill(json.dumps(tools))
    with page.expect_request("**/v1/chat/completions") as info:
        page.get_by_test_id("chat-input").fill("Weather in Oslo?")
        page.get_by_test_id("chat-input").press("Enter")
    assert info.value.post_data_json["tools"] == tools
    card = page.get_by_test_id("tool-call")
    expect(card.get_by_test_id("tool-call-name")).to_have_text("get_weather")
    expect(card.get_by_test_id("tool-call-arguments")).to_have_text('{\n  "city": "Oslo"\n}')
    expect(page.get_by_test_id("message-stats")).to_contain_text("tool call")
    page.get_by_test_id("chat-tools").fill("{not json")
    page.get_by_test_id("chat-input").fill("again")
    page.get_by_test_id("chat-input").press("Enter")
    expect(page.get_by_test_id("chat-error")).to_contain_text("Invalid JSON in the tools box")


def test_header_says_why_when_the_model_failed_to_load(tmp_path, browser_context):
    """A server up with no model (--keep-serving): the header is not "offline" and the reason shows."""
    with running_server(tmp_path, {"name": "missing.st"}, wait_ready=False, args=("--keep-serving",)) as base:
        code, ready = http("GET", base + "/ready")
        assert code == 503 and "missing.st" in ready["error"]["message"]
        page = browser_context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(base + "/")
            expect(page.get_by_test_id("header-model")).to_have_text("model not loaded")
            expect(page.get_by_test_id("server-banner")).to_contain_text("model failed to load")
            expect(page.get_by_test_id("server-banner")).to_contain_text("missing.st")
            page.get_by_test_id("tab-status").click()
            expect(page.get_by_test_id("status-error")).to_contain_text("missing.st")
            shot(page, "no-model")
        finally:
            page.close()
        assert not errors, errors


def test_chart_draws_the_rate_and_occupancy_of_a_generation(page, server):
    wait_until(lambda: status(server)["queue"]["active"] == 0, 10, "an idle server")
    page.get_by_test_id("tab-status").click()
    chart = page.get_by_test_id("status-chart")
    expect(chart).to_have_attribute("data-samples", re.compile(r"^[1-9]"))
    expect(page.get_by_test_id("chart-idle")).to_have_text("idle: no generation running")
    assert page.get_by_test_id("chart-rate").get_attribute("d") == ""  # no rate while idle

    page.get_by_test_id("tab-chat").click()
    set_fields(page, max_tokens=2000)
    # a stop string it never writes, instead of the server's "\n\n": the answer runs its 2000 tokens
    # (a sampled answer can end within the first sample otherwise)
    page.get_by_test_id("setting-stop").fill("<never written>")
    page.get_by_test_id("chat-input").fill("Write a very long story")
    page.get_by_test_id("chat-input").press("Enter")
    page.wait_for_function(GROWS, arg=['[data-testid="message-assistant"] .msg-body.streaming', "chart"],
                           timeout=TIMEOUT_MS)
    page.get_by_test_id("tab-status").click()  # the answer keeps streaming in the chat view
    expect(chart).to_have_attribute("data-busy-samples", re.compile(r"^([4-9]|\d\d)"), timeout=20_000)  # ~8 s
    expect(page.get_by_test_id("chart-idle")).to_have_count(0)
    # One stream in a batch of 8: the occupancy steps up to 1/8 of the plot's height.
    occupancy = page.get_by_test_id("chart-occupancy").get_attribute("d")
    heights = [float(y) for y in re.findall(r"L[\d.]+,([\d.]+)", occupancy)]
    assert heights and min(heights) < max(heights), occupancy
    rate = page.get_by_test_id("chart-rate").get_attribute("d")
    assert rate.startswith("M") and rate.count("L") >= 3, rate  # a line through the busy samples
    expect(page.get_by_test_id("status-tps-server")).not_to_have_text("idle")
    shot(page, "status", docs=True)
    page.keyboard.press("Escape")  # stops the chat's answer from any view
    wait_until(lambda: status(server)["queue"]["active"] == 0, 5, "queue.active == 0 after Esc")
    expect(page.get_by_test_id("status-tps-server")).to_have_text("idle")
    samples = int(chart.get_attribute("data-samples"))
    expect(chart).to_have_attribute("data-samples", re.compile(rf"^(?!{samples}$)"))  # the chart goes on
    assert int(chart.get_attribute("data-busy-samples")) >= 1  # and keeps what it drew
    page.get_by_test_id("tab-chat").click()
    page.get_by_test_id("setting-stop").fill("")  # the settings are stored for the next tests


@pytest.fixture
def models_server(tmp_path):
    """A models folder with two models, a state and a LoRA of the served model."""
    from test_lora_hotswap import adapter
    from safetensors.numpy import save_file

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(MODEL_FILE, folder / MODEL_FILE.name)
    shutil.copy(OTHER_MODEL, folder / OTHER_MODEL.name)
    write_state_file(folder / "pirate.st")
    save_file(adapter(MODEL_FILE), str(folder / "lora.st"))
    with running_server(tmp_path, {"path": str(folder)}, extra_sections=f'[admin]\nkeys = ["{ADMIN_KEY}"]\n') as base:
        yield base, folder


def served(base: str) -> str | None:
    code, body = http("GET", base + "/v1/models")
    return body["data"][0]["id"] if code == 200 else None


# The loads refused and the 503s while no model is loaded, as Chromium logs failed requests.
EXPECTED_FAILURES = re.compile(r"^Failed to load resource: the server responded with a status of (400|503)")


def test_models_panel_loads_unloads_attaches_and_shows_progress(models_server, browser_context):
    (base, folder), admin = models_server, {"Authorization": f"Bearer {ADMIN_KEY}"}
    other = OTHER_MODEL.stem
    with ui_page(browser_context, base, "models-panel", allowed=EXPECTED_FAILURES) as page:
        page.get_by_test_id("tab-status").click()
        page.get_by_test_id("admin-key").fill(ADMIN_KEY)
        page.get_by_test_id("admin-key").press("Enter")
        loaded, progress = page.get_by_test_id("models-loaded-path"), page.get_by_test_id("models-progress-text")
        expect(loaded).to_have_text(MODEL_FILE.name)
        files = page.get_by_test_id("models-file")
        row = lambda name: files.filter(has=page.get_by_test_id("models-file-name").get_by_text(name, exact=True))
        expect(files.get_by_test_id("models-file-name")).to_have_text(
            sorted(["lora.st", "pirate.st", MODEL_FILE.name, OTHER_MODEL.name]))

        # another model: served, the header follows; then unload, and load the first again
        row(OTHER_MODEL.name).get_by_test_id("models-load").click()
        expect(loaded).to_have_text(OTHER_MODEL.name)
        expect(progress).to_have_text(re.compile(rf"^Loaded {OTHER_MODEL.name} \(\d+\.\d s\)$"))
        expect(page.get_by_test_id("header-model")).to_have_text(other)
        assert served(base) == other
        page.get_by_test_id("models-unload").click()
        expect(page.get_by_test_id("models-loaded")).to_contain_text("No model loaded: no model is loaded (it was unloaded)")
        expect(progress).to_have_text(re.compile(r"^Unloaded \(\d+\.\d s\)$"))
        expect(page.get_by_test_id("header-model")).to_have_text("model not loaded")
        assert served(base) is None
        expect(row("pirate.st").get_by_test_id("models-state-attach")).to_be_disabled()  # nothing to attach to
        row(MODEL_FILE.name).get_by_test_id("models-load").click()
        expect(loaded).to_have_text(MODEL_FILE.name)
        expect(page.get_by_test_id("header-model")).to_have_text(MODEL)

        # a state attached while serving: listed, offered in the state picker; then detached
        row("pirate.st").get_by_test_id("models-state-attach").click()
        expect(page.get_by_test_id("models-state-name")).to_have_text(["pirate"])
        expect(page.get_by_test_id("state-picker").locator("option")).to_have_text(["Model default (no state)", "pirate"])
        # a Reload that fails (the state file was replaced by something else): the route's
        # message, and the model keeps serving with what it had
        shutil.copy(folder / "lora.st", folder / "pirate.st")
        row(MODEL_FILE.name).get_by_test_id("models-load").click()
        error = page.get_by_test_id("models-error")
        expect(error).to_contain_text(f"model '{MODEL_FILE.name}' failed to load (the previous model keeps serving)")
        expect(error).to_contain_text("missing blocks.0.att.time_state")
        expect(loaded).to_have_text(MODEL_FILE.name)
        expect(page.get_by_test_id("models-state-name")).to_have_text(["pirate"])
        assert served(base) == MODEL
        page.get_by_test_id("models-state-detach").click()
        expect(page.get_by_test_id("models-state")).to_have_count(0)
        expect(error).to_be_hidden()
        expect(page.get_by_test_id("state-picker").locator("option")).to_have_text(["Model default (no state)"])

        # a LoRA applied while serving, removed; applied again, merged by a Reload, removed by reloading
        page.get_by_test_id("models-lora-alpha").fill("0.5")
        row("lora.st").get_by_test_id("models-lora-apply").click()
        lora = page.get_by_test_id("models-lora")
        expect(lora).to_contain_text("alpha 0.5 · applied while serving")
        assert http("GET", base + "/admin/loras", headers=admin)[1]["loras"][0]["path"] == "lora.st"
        lora.get_by_test_id("models-lora-remove").click()
        expect(lora).to_have_count(0)
        assert http("GET", base + "/admin/loras", headers=admin)[1] == {"loras": []}
        row("lora.st").get_by_test_id("models-lora-apply").click()
        expect(lora).to_contain_text("applied while serving")
        row(MODEL_FILE.name).get_by_test_id("models-load").click()  # "Reload": keeps the LoRA, merged now
        expect(lora).to_contain_text("alpha 0.5 · merged at load")
        expect(lora.get_by_test_id("models-lora-remove")).to_have_text("Remove (reload)")
        lora.get_by_test_id("models-lora-remove").click()
        expect(lora).to_have_count(0)
        assert http("GET", base + "/api/models/info")[1]["reload"]["lora"] == []

        # a load by another client shows up through the feed, with no click here
        code, _ = http("POST", base + "/admin/models/load", {"model_path": OTHER_MODEL.name}, headers=admin)
        assert code == 200
        expect(loaded).to_have_text(OTHER_MODEL.name)
        expect(page.get_by_test_id("header-model")).to_have_text(other)
        expect(error).to_be_hidden()

        # while the feed says "loading": a moving bar and the time since; then the new model
        code, info = http("GET", base + "/api/models/info")
        loading = f"data: {json.dumps({**info, 'status': 'loading'})}\n\n"
        page.route("**/api/models/state", lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=loading))
        page.get_by_test_id("models-refresh").click()
        expect(page.get_by_test_id("models-progress-bar")).to_be_visible()
        expect(progress).to_have_text(re.compile(  # the time goes on: past a second here
            rf"^The server is loading a model \({OTHER_MODEL.name} serves meanwhile\)… [1-9]\d*\.\d s$"))
        shot(page, "models-loading", docs=True)
        page.unroute("**/api/models/state")  # the feed opens again on the real server: loaded
        expect(page.get_by_test_id("models-progress-bar")).to_be_hidden()
        expect(progress).to_have_text(re.compile(rf"^Now serving {OTHER_MODEL.name} \(the load took \d+\.\d s\)\.$"))
