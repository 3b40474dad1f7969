"""The web chat page (`llamak serve` at `/`) in headless Chromium against a real server on zoo:tiny-instruct.

Needs Selenium plus Debian's `chromium` and `chromium-driver`; when they are missing the test tries
`apt-get install` once (only as root) and otherwise skips, saying what to install. tiny-instruct's
text is gibberish, so only the mechanics are checked: streaming, Korean intact, history, IME-safe
Enter, stop/reset, task presets and the theme toggle.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from helpers import free_port

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

INSTALL_HINT = "install Chromium and its driver: apt-get install -y chromium chromium-driver"
KOREAN = "안녕하세요, 자기소개 해 주세요"


def _browser_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or next((p for p in ("/usr/lib/chromium/chromedriver",) if os.path.exists(p)), None)
    return browser, driver


def _ensure_chromium():
    browser, driver = _browser_paths()
    if browser and driver:
        return browser, driver
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
        for commands in ([install], [["apt-get", "update"], install]):  # a fresh machine may have no package lists yet
            try:
                for command in commands:
                    subprocess.run(command, env=env, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if all(_browser_paths()):
                break
        browser, driver = _browser_paths()
        if browser and driver:
            return browser, driver
    pytest.skip(f"headless Chromium not available; {INSTALL_HINT}")


def _get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "llamak.cli", "serve", "zoo:tiny-instruct", "--port", str(port), "--host", "127.0.0.1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llamak serve exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
            try:
                if _get_json(base + "/health", timeout=2).get("status") == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llamak serve did not answer /health within 120 s:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # SIGTERM ends `llamak serve` through its exit path, which closes the engine (vLLM's engine
    # processes would otherwise outlive the server); a plain SIGTERM death would be -15
    assert proc.returncode == 0, log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def driver():
    browser, chromedriver = _ensure_chromium()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--lang=ko-KR", "--window-size=1000,900"):
        options.add_argument(arg)
    try:
        drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    except WebDriverException as err:  # e.g. a browser/driver version mismatch: say what to fix
        first_line = (str(err).strip().splitlines() or [""])[0]
        pytest.skip(f"headless Chromium did not start ({type(err).__name__}: {first_line}); {INSTALL_HINT}")
    drv.set_script_timeout(30)
    yield drv
    drv.quit()


def _messages(drv, role):
    return drv.find_elements(By.CSS_SELECTOR, f"#messages .msg.{role}")


def _wait_done(drv, count, timeout=45):
    """Wait until `count` assistant messages exist and the last one finished streaming; return it."""

    def done(d):
        msgs = _messages(d, "assistant")
        return msgs[-1] if len(msgs) >= count and msgs[-1].get_attribute("data-done") == "true" else False

    return WebDriverWait(drv, timeout).until(done)


def _text(el):
    return el.find_element(By.CSS_SELECTOR, ".text").get_attribute("textContent")


# Records each POST: its JSON body and the raw response, decoded independently of the page (whole
# buffer at once), so the page's rendering can be compared with exactly what the server sent.
RECORD_FETCH = """
window.__sent = [];
const orig = window.fetch;
window.fetch = async (url, init) => {
  const resp = await orig(url, init);
  if (init && init.method === 'POST') {
    const rec = {url: String(url), body: JSON.parse(init.body), raw: null};
    window.__sent.push(rec);
    resp.clone().arrayBuffer().then(b => { rec.raw = new TextDecoder().decode(b); });
  }
  return resp;
};
"""


def _server_text(drv, index):
    """The content deltas the server sent for recorded POST `index`, concatenated."""
    raw = WebDriverWait(drv, 10).until(lambda d: d.execute_script(f"return window.__sent[{index}].raw"))
    events = [line[len("data: "):] for line in raw.replace("\r\n", "\n").split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", raw[-500:]
    return "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])


# readSSE fed byte-by-byte (every Hangul syllable split across chunks, CRLF split too).
SSE_SPLIT = """
const done = arguments[arguments.length - 1];
const events = ['가', '나다 ', '😀라'].map(c => 'data: ' + JSON.stringify({choices: [{index: 0, delta: {content: c}, finish_reason: null}]}) + '\\r\\n\\r\\n');
const bytes = new TextEncoder().encode(': comment\\n\\n' + events.join('') + 'data: [DONE]\\n\\n');
let i = 0;
const body = new ReadableStream({pull(c) { if (i < bytes.length) c.enqueue(bytes.slice(i, ++i)); else c.close(); }});
let text = '';
readSSE(new Response(body), ev => { text += ev.choices[0].delta.content; }).then(() => done(text), e => done('ERR ' + e));
"""


def test_web_chat_page(driver, server):  # driver first: a missing browser skips before the server starts
    drv = driver
    drv.get(server + "/")
    WebDriverWait(drv, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    assert drv.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
    assert drv.find_element(By.ID, "model").text  # the model name from /health
    options = [o.get_attribute("value") for o in drv.find_elements(By.CSS_SELECTOR, "#task option")]
    assert options[0] == "chat" and {"expand", "summarize", "classify", "qa"} <= set(options)

    # SSE parsing is robust to arbitrary chunk boundaries (Hangul and emoji split mid-character).
    assert drv.execute_async_script(SSE_SPLIT) == "가나다 😀라"

    # Theme toggle flips <html data-theme> and remembers the choice.
    html = drv.find_element(By.TAG_NAME, "html")
    background = "return getComputedStyle(document.body).backgroundColor"
    before, bg_before = html.get_attribute("data-theme"), drv.execute_script(background)
    assert before in ("light", "dark")
    drv.find_element(By.ID, "theme").click()
    after = html.get_attribute("data-theme")
    assert after in ("light", "dark") and after != before
    assert drv.execute_script(background) != bg_before  # style.css is served and themes differ
    assert drv.execute_script("return localStorage.getItem('llamak-theme')") == after

    # Enter while an IME composition is in progress (isComposing / keyCode 229) must not send;
    # neither does Shift+Enter.
    box = drv.find_element(By.ID, "input")
    sent_while_composing = drv.execute_script(
        """
        const box = document.getElementById('input');
        box.value = '한글 조합 중';
        const fire = (init) => box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', code: 'Enter', bubbles: true, cancelable: true, ...init}));
        fire({isComposing: true});
        const ev = new KeyboardEvent('keydown', {key: 'Enter', bubbles: true, cancelable: true});
        Object.defineProperty(ev, 'keyCode', {get: () => 229});
        box.dispatchEvent(ev);
        fire({shiftKey: true});
        return [document.querySelectorAll('#messages .msg').length, box.value];
        """
    )
    assert sent_while_composing == [0, "한글 조합 중"]
    box.clear()

    # A streamed chat turn: Korean typed in, shown exactly, answer streamed and finished.
    drv.execute_script(RECORD_FETCH)
    drv.execute_script("document.getElementById('max-tokens').value = '24'")
    box.send_keys(KOREAN)
    drv.find_element(By.ID, "send").click()
    first = _wait_done(drv, 1)
    assert [_text(m) for m in _messages(drv, "user")] == [KOREAN]
    answer = _text(first)
    assert first.get_attribute("data-finish") in ("stop", "length", "content_filter"), first.get_attribute("data-finish")
    assert answer.strip(), "the assistant message stayed empty"
    # The page shows exactly what the server streamed. (No blanket "no U+FFFD" check on the answer:
    # tiny-instruct itself sometimes samples byte sequences that are not UTF-8, which the server
    # decodes to U+FFFD in streamed and non-streamed answers alike; the page must add none.)
    server_text = _server_text(drv, 0)
    assert answer == server_text

    # Enter sends the next turn, and the history goes with it.
    box.send_keys("두 번째 질문")
    box.send_keys(Keys.ENTER)
    _wait_done(drv, 2)
    sent = drv.execute_script("return window.__sent")
    assert [s["url"] for s in sent] == ["v1/chat/completions"] * 2
    assert sent[0]["body"]["messages"] == [{"role": "user", "content": KOREAN}]
    assert sent[1]["body"]["messages"] == [
        {"role": "user", "content": KOREAN},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "두 번째 질문"},
    ]
    assert sent[1]["body"]["stream"] is True and sent[1]["body"]["max_tokens"] == 24

    # New chat clears the page and the history.
    drv.find_element(By.ID, "new").click()
    assert _messages(drv, "user") == [] and _messages(drv, "assistant") == []

    # Task preset: classify shows the labels field and streams one of the labels.
    drv.find_element(By.CSS_SELECTOR, "#task option[value='classify']").click()
    labels = drv.find_element(By.ID, "labels")
    assert labels.is_displayed() and not drv.find_element(By.ID, "question").is_displayed()
    labels.send_keys("긍정, 부정")
    box.send_keys("이 영화 정말 재미있었어요!")
    drv.find_element(By.ID, "send").click()
    result = _wait_done(drv, 1)
    task_call = drv.execute_script("return window.__sent")[-1]
    assert task_call["url"] == "v1/tasks/classify"
    assert task_call["body"]["labels"] == ["긍정", "부정"] and task_call["body"]["text"] == "이 영화 정말 재미있었어요!"
    assert result.get_attribute("data-finish") in ("stop", "length", "content_filter")
    if result.get_attribute("data-finish") != "content_filter":
        assert _text(result).strip() in ("긍정", "부정")

    # Stop aborts a stream in flight (a stubbed fetch that sends one delta and then hangs).
    drv.find_element(By.ID, "new").click()
    drv.find_element(By.CSS_SELECTOR, "#task option[value='chat']").click()
    drv.execute_script(
        """
        window.fetch = (url, init) => {
          const chunk = 'data: ' + JSON.stringify({choices: [{index: 0, delta: {content: '부분 응답'}, finish_reason: null}]}) + '\\n\\n';
          const body = new ReadableStream({start(c) {
            c.enqueue(new TextEncoder().encode(chunk));
            init.signal.addEventListener('abort', () => c.error(new DOMException('aborted', 'AbortError')));
          }});
          return Promise.resolve(new Response(body, {headers: {'Content-Type': 'text/event-stream'}}));
        };
        """
    )
    box.send_keys("멈춰 주세요")
    box.send_keys(Keys.ENTER)
    WebDriverWait(drv, 10).until(lambda d: _messages(d, "assistant") and _text(_messages(d, "assistant")[-1]) == "부분 응답")
    assert _messages(drv, "assistant")[-1].get_attribute("data-done") == "false"
    assert drv.find_element(By.ID, "send").get_attribute("disabled") and drv.find_element(By.ID, "stop").is_enabled()
    drv.find_element(By.ID, "stop").click()
    stopped = _wait_done(drv, 1, timeout=10)
    assert stopped.get_attribute("data-finish") == "aborted" and _text(stopped) == "부분 응답"
    assert drv.find_element(By.ID, "send").is_enabled()
