"""The chat page at ``GET /``, driven in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``scripts/setup.sh --test``) through selenium, against a real
``hologram-serve`` with an API key: the key typed into the page, a message sent with Enter and
its reply seen streaming in, a long reply stopped, a wrong key shown as an error.

Screenshots go to the test's temporary folder, or to ``$HOLOGRAM_SCREENSHOTS`` when set."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from .conftest import Server, metric_values, start_server

pytestmark = pytest.mark.slow

KEY = "page-test-key"
T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

#: Records every change of the last reply's text, so a test can tell a stream from one update.
WATCH_REPLY = """
window.__updates = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('.msg.assistant .content');
  if (replies.length) window.__updates.push(replies[replies.length - 1].textContent.length);
}).observe(document.getElementById('messages'),
           {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def page_server(server_logs: Path) -> Iterator[Server]:
    srv = start_server(["--ctx", "1024", "--parallel", "4", "--threads", "2",
                        "--api-key", KEY], server_logs)
    yield srv
    code = srv.stop()
    assert code == 0, srv.log()[-3000:]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("HOLOGRAM_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        return Path(target)
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture()
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail("the chat page tests need Debian's chromium and chromium-driver: run "
                    "scripts/setup.sh --test (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,820", "--no-first-run", "--disable-extensions",
                "--force-color-profile=srgb", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def open_page(driver: Any, server: Server, key: str | None) -> None:
    driver.get(server.base + "/")
    assert driver.title == "hologram chat"
    if key is not None:
        field = by_id(driver, "api-key")
        field.send_keys(key)
        by_id(driver, "input").click()  # leaving the field reloads the model list with the key


def model_options(driver: Any) -> list[str]:
    return [o.get_attribute("value") for o in by_css(driver, "#model option")]


def set_field(driver: Any, element_id: str, value: str) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(value)


def type_and_enter(driver: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = by_id(driver, "input")
    box.click()
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def last_reply(driver: Any) -> Any:
    replies = by_css(driver, ".msg.assistant")
    return replies[-1] if replies else None


def reply_stats(driver: Any) -> str | None:
    reply = last_reply(driver)
    if reply is None:
        return None
    stats = reply.find_elements("css selector", ".stats")
    return str(stats[0].text) if stats else None


def csp_violations(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused" in e["message"]]


def save_screenshot(driver: Any, folder: Path, name: str) -> Path:
    path = folder / name
    assert driver.save_screenshot(str(path)), path
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (path, len(data))
    print(f"screenshot: {path}")
    return path


def test_page_is_public_static_and_locked_down(page_server: Server) -> None:
    r = requests.get(page_server.base + "/", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    # One self-contained file: nothing loaded from another host, no external script or sheet.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", r.text)
    assert "<script src" not in r.text and "stylesheet" not in r.text
    # The API is still closed without the key.
    assert requests.get(page_server.v1 + "/models", timeout=10).status_code == 401


def test_send_with_enter_streams_the_reply(browser: Any, page_server: Server,
                                           screenshots: Path) -> None:
    open_page(browser, page_server, KEY)
    options = wait_for(lambda: model_options(browser), 60, "the model list")
    assert options and all("MiniLM" not in o for o in options), options
    set_field(browser, "temperature", "0")
    set_field(browser, "max-tokens", "48")
    browser.execute_script(WATCH_REPLY)
    # Shift+Enter adds a line and sends nothing.
    from selenium.webdriver.common.keys import Keys

    box = by_id(browser, "input")
    box.send_keys("a", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "b")
    assert box.get_attribute("value") == "a\nb"
    assert not by_css(browser, ".msg")
    box.clear()
    type_and_enter(browser, "Write two sentences about the sea.")
    # Enter sent the message: the box is empty and the user's turn is on the page.
    assert by_id(browser, "input").get_attribute("value") == ""
    user = by_css(browser, ".msg.user .content")
    assert [u.text for u in user] == ["Write two sentences about the sea."]
    stats = wait_for(lambda: reply_stats(browser), 120, "the reply's stats line")
    text = last_reply(browser).find_element("css selector", ".content").text
    assert text.strip(), "empty reply"
    updates: list[int] = browser.execute_script("return window.__updates")
    grown = sorted({n for n in updates if n > 0})
    assert len(grown) >= 3, f"the reply arrived in {len(grown)} update(s), not as a stream"
    m = re.fullmatch(r"(\d+) tokens · ([0-9.]+) tok/s · TTFT (\d+) ms · (stop|length)", stats)
    assert m, stats
    assert 1 < int(m.group(1)) <= 48 and float(m.group(2)) > 0 and int(m.group(3)) > 0
    assert by_id(browser, "send").is_displayed() and not by_id(browser, "stop").is_displayed()
    assert not by_css(browser, ".error")
    # A second turn carries the first (the conversation is sent with each request).
    type_and_enter(browser, "And one more.")
    wait_for(lambda: len(by_css(browser, ".msg.assistant .stats")) == 2, 120, "second reply")
    assert not csp_violations(browser)
    # The key stays in the page: not in the URL, not in storage.
    assert KEY not in browser.current_url
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    assert KEY not in browser.execute_script("return document.cookie")
    save_screenshot(browser, screenshots, "chat-page.png")


def test_stop_a_long_reply(browser: Any, page_server: Server, screenshots: Path) -> None:
    open_page(browser, page_server, KEY)
    wait_for(lambda: model_options(browser), 60, "the model list")
    set_field(browser, "temperature", "0")
    set_field(browser, "max-tokens", "900")
    type_and_enter(browser, "Tell me a very long story about a dragon, in many chapters.")
    stop = wait_for(lambda: by_id(browser, "stop") if by_id(browser, "stop").is_displayed()
                    else None, 10, "the stop button")
    wait_for(lambda: len(last_reply(browser).find_element("css selector", ".content").text) > 20,
             120, "the first words of the reply")
    stop.click()
    stats = wait_for(lambda: reply_stats(browser), 20, "the stopped reply's stats")
    assert stats.endswith("stopped"), stats
    n = int(stats.split()[0])
    assert n < 900, stats
    text = last_reply(browser).find_element("css selector", ".content").text
    time.sleep(1.0)
    assert last_reply(browser).find_element("css selector", ".content").text == text
    assert by_id(browser, "send").is_displayed()
    # The server stopped generating too: the page closed the stream, the request is logged as
    # cancelled, and nothing runs any more (the 900 tokens would take several more seconds).
    headers = {"Authorization": f"Bearer {KEY}"}

    def idle() -> bool:
        text = requests.get(page_server.base + "/metrics", headers=headers, timeout=10).text
        return sum(metric_values(text, "hologram_sequences_running").values()) == 0

    wait_for(idle, 3, "the server to stop the stopped generation")

    def cancelled_entry() -> dict[str, Any] | None:
        for line in reversed(page_server.log().splitlines()):
            _, sep, payload = line.partition("hologram.access: ")
            if sep and '"/v1/chat/completions"' in payload:
                entry: dict[str, Any] = json.loads(payload)
                return entry if entry["cancelled"] else None
        return None

    entry = wait_for(cancelled_entry, 10, "the access-log line of the stopped request")
    assert entry["completion_tokens"] < 900, entry
    save_screenshot(browser, screenshots, "chat-page-stopped.png")


def test_bad_key_is_shown(browser: Any, page_server: Server, screenshots: Path) -> None:
    open_page(browser, page_server, None)
    notice = wait_for(lambda: by_id(browser, "notice").text, 30, "the no-key notice")
    assert "needs an API key" in notice
    open_page(browser, page_server, "not-the-key")
    wait_for(lambda: "refused" in by_id(browser, "notice").text, 30, "the refused-key notice")
    type_and_enter(browser, "Hello?")
    error = wait_for(lambda: by_css(browser, ".error"), 30, "the error box")[0]
    assert "401" in error.text and "invalid_api_key" in error.text, error.text
    assert "API key" in error.text
    assert not by_css(browser, ".msg.assistant"), "a reply bubble was left for a failed request"
    assert by_css(browser, ".msg.user.failed")
    # The text comes back into the box, ready to resend once the key is right.
    assert by_id(browser, "input").get_attribute("value") == "Hello?"
    save_screenshot(browser, screenshots, "chat-page-bad-key.png")
    set_field(browser, "api-key", KEY)
    by_id(browser, "input").click()
    wait_for(lambda: model_options(browser), 30, "the model list with the right key")
    from selenium.webdriver.common.keys import Keys

    by_id(browser, "input").send_keys(Keys.ENTER)
    wait_for(lambda: reply_stats(browser), 120, "the reply with the right key")
    assert not csp_violations(browser)


def test_server_error_is_shown(browser: Any, page_server: Server) -> None:
    """A request the server refuses (here: more tokens than --max-request-tokens allows) shows
    the server's status, code and message."""
    open_page(browser, page_server, KEY)
    wait_for(lambda: model_options(browser), 60, "the model list")
    set_field(browser, "max-tokens", "100000")
    type_and_enter(browser, "Hi")
    error = wait_for(lambda: by_css(browser, ".error"), 30, "the error box")[0]
    r = requests.post(page_server.v1 + "/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": model_options(browser)[0], "max_tokens": 100000,
                            "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert r.status_code == 400, r.text
    expected = r.json()["error"]
    title, detail = error.text.split("\n", 1)
    assert title.startswith("Error 400")
    assert (expected.get("code") or expected["type"]) in title
    assert detail == expected["message"]
