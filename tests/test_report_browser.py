"""The report in a real browser: headless Chromium sorts a leaderboard and logs no error.

Chromium is driven through the Chrome DevTools Protocol over its websocket, with a minimal
RFC 6455 client written here on the standard library, so the test needs Chromium and nothing
else (no Selenium, no chromedriver). It is skipped only when no Chromium binary can be found.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.report import figures
from bench.report.svg import Box, text_box
from tests.recordkit import make_record, seeded, write_records
from tests.test_report import make_report

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """`BENCH_CHROMIUM`, else the first Chromium-like binary on PATH."""
    explicit = os.environ.get("BENCH_CHROMIUM")
    if explicit:
        return explicit
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class WebSocket:
    """Just enough of RFC 6455 for DevTools: masked text frames out, text frames in."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        assert url.startswith("ws://")
        host_port, _, path = url[len("ws://") :].partition("/")
        host, _, port = host_port.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            response += chunk
        head, _, self.buffer = response.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])  # FIN + text
        if len(payload) < 126:
            header.append(0x80 | len(payload))
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack("!H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(length)
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode in (0x9, 0xA):  # ping / pong: not expected from DevTools, ignored
                continue
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Page:
    """One DevTools page session: commands, and every error-like event it reports."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []

    def _note(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(json.dumps(params.get("args"))[:500])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(
                params["entry"].get("text", "") + " " + params["entry"].get("url", "")
            )
        self.events.append(event)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._note(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> None:
        seen = len([e for e in self.events if e.get("method") == event])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([e for e in self.events if e.get("method") == event]) > seen:
                return
            self._note(json.loads(self.ws.receive()))
        raise TimeoutError(f"no {event} within {timeout} s")

    def evaluate(self, expression: str) -> Any:
        """The expression's value (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element (scrolled into view first)."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center', inline: 'center'});"
            " const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set BENCH_CHROMIUM)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ws = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{binary} did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.loads(r.read())
        target = next(t for t in targets if t["type"] == "page")
        ws = WebSocket(target["webSocketDebuggerUrl"])
        page = Page(ws)
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        yield page
    finally:
        if ws is not None:
            ws.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report from hand-written records whose accuracy order differs from the row order."""
    results = tmp_path_factory.mktemp("results")
    accuracy = {"scratch": 0.70, "label_smoothing": 0.80, "kd": 0.90, "zeta": 0.75}
    records = [
        make_record("p", "wine", "teacher", 0, {"accuracy": 0.97, "expl_spearman_ig": 1.0},
                    role="teacher"),
        make_record("p", "wine", "random_explainer", 0, {"expl_spearman_ig": 0.01},
                    role="control"),
    ]  # fmt: skip
    for name, acc in accuracy.items():
        records += seeded(
            "p",
            "wine",
            name,
            {"accuracy": [acc, acc + 0.01, acc + 0.02], "expl_spearman_ig": [0.4, 0.5, 0.45]},
        )
    write_records(results, records)
    out = tmp_path_factory.mktemp("site")
    make_report(results, out)
    return out


ROWS = (
    "Array.from(document.querySelector('#table-p-wine table').tBodies[0].rows)"
    ".map(r => r.cells[0].textContent)"
)


def test_clicking_a_header_sorts_the_rows_and_logs_no_error(browser: Page, site: Path) -> None:
    browser.open((site / "index.html").as_uri())
    before = browser.evaluate(ROWS)
    assert before == ["teacher", "random_explainer", "scratch", "label_smoothing", "kd", "zeta"]
    header = "#table-p-wine th[title^='Top-1 accuracy']"
    browser.click(header)
    after = browser.evaluate(ROWS)
    # Best first for a higher-is-better metric; the reference rows stay on top.
    assert after == ["teacher", "random_explainer", "kd", "label_smoothing", "zeta", "scratch"]
    assert browser.evaluate(f"document.querySelector({json.dumps(header)}).getAttribute('aria-sort')") == "descending"  # fmt: skip
    assert browser.evaluate(f"document.querySelector({json.dumps(header + ' .arrow')}).textContent") == "▼"  # fmt: skip
    browser.click(header)
    assert browser.evaluate(ROWS)[2:] == ["scratch", "zeta", "label_smoothing", "kd"]
    assert browser.errors == []


def test_dataset_page_shows_its_figures_without_errors(browser: Page, site: Path) -> None:
    browser.open((site / "dataset-p-wine.html").as_uri())
    widths = browser.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
    assert len(widths) == 2 and all(w > 0 for w in widths)  # trade-off and per-seed plots
    assert browser.errors == []


def test_the_error_listener_does_see_errors(browser: Page, site: Path) -> None:
    """Guards the two tests above: an error on the page must reach `browser.errors`."""
    browser.open((site / "index.html").as_uri())
    before = len(browser.errors)
    browser.evaluate("setTimeout(() => { throw new Error('deliberate'); }, 0); true")
    browser.evaluate("new Promise(r => setTimeout(() => r(true), 50))")
    browser.call("Runtime.evaluate", expression="1")  # drain pending events
    assert any("deliberate" in e for e in browser.errors[before:])
    del browser.errors[before:]


@pytest.fixture(scope="module")
def glance_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of `tests/test_glance.py`'s records: `best` beats scratch and kd on both axes."""
    from tests.test_glance import glance_records

    results = write_records(tmp_path_factory.mktemp("glance-results"), glance_records())
    out = tmp_path_factory.mktemp("glance-site")
    make_report(results, out)
    return out


def test_every_page_fits_1400_px_loads_cleanly_and_stays_offline(
    browser: Page, glance_site: Path
) -> None:
    browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=900,
                 deviceScaleFactor=1, mobile=False)  # fmt: skip
    try:
        pages = sorted(glance_site.glob("*.html"))
        assert {"index.html", "metrics.html", "dataset-p-wine.html"} <= {p.name for p in pages}
        for page in pages:
            seen = len(browser.events)
            browser.open(page.as_uri())
            overflow = browser.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{page.name} scrolls sideways by {overflow} px at 1400 px"
            requests = [e["params"]["request"]["url"] for e in browser.events[seen:]
                        if e.get("method") == "Network.requestWillBeSent"]  # fmt: skip
            assert requests and all(u.startswith(("file://", "data:")) for u in requests), requests
        assert browser.errors == []
        browser.open((glance_site / "index.html").as_uri())
        marked = browser.evaluate(
            "Array.from(document.querySelectorAll('table.summary tr'))"
            ".filter(r => r.cells[0].textContent === 'best')"
            ".map(r => Array.from(r.cells).slice(1).map(c => c.className))[0]"
        )
        assert marked == ["sig-better group-start", "sig-better"]
    finally:
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)  # fmt: skip


def test_trade_off_labels_overlap_nothing_as_the_browser_sets_them(
    browser: Page, tmp_path: Path
) -> None:
    """Labels are placed on estimated text boxes (`bench.report.svg.text_box`): the box the
    browser gives each set text must lie inside its estimate, so no two overlap on screen either."""
    from tests.test_glance import crowded_points

    path = figures.tradeoff_plot(crowded_points(), "expl_spearman_ig", "accuracy",
                                 tmp_path / "t.svg", floor_x=0.45)  # fmt: skip
    browser.open(path.as_uri())
    shown = browser.evaluate(
        "Array.from(document.querySelectorAll('text')).map(t => { const b = t.getBBox();"
        " return [t.textContent, +t.getAttribute('x'), +t.getAttribute('y'),"
        " +t.getAttribute('font-size'), t.getAttribute('text-anchor') || 'start',"
        " t.getAttribute('class') || '', b.x, b.y, b.width, b.height]; })"
    )
    labels = []
    for text, x, y, size, anchor, css, *box in shown:
        # getBBox is in the text's own coordinates, before a rotation: the y label's too.
        real = Box(box[0], box[1], box[0] + box[2], box[1] + box[3])
        # Within half a pixel: the browser rounds its text boxes to whole pixels.
        assert real.within(text_box(text, x, y, size, anchor).padded(0.5)), (text, real)
        if css in ("label", "key"):
            labels.append((text, real))
    assert len(labels) == len(crowded_points())
    for i, (text, box) in enumerate(labels):
        assert not any(box.overlaps(other) for _, other in labels[i + 1 :]), text
    assert browser.errors == []


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(("width", "height", "mobile"), [(390, 844, True), (1400, 900, False)])
def test_the_index_answers_first_and_reads_at_phone_and_desktop_width(
    browser: Page, glance_site: Path, tmp_path: Path, width: int, height: int, mobile: bool
) -> None:
    """The verdicts and the best methods come first, on the first screen; the page never scrolls
    sideways (wide tables scroll in their own box); the text keeps a readable size. The
    screenshot is taken as the check sees the page (docs/images/ holds the reference site's)."""
    browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                 deviceScaleFactor=1, mobile=mobile)  # fmt: skip
    try:
        browser.open((glance_site / "index.html").as_uri())
        overflow = browser.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the index scrolls sideways by {overflow} px at {width} px"
        top = browser.evaluate("document.getElementById('answer').getBoundingClientRect().top")
        assert 0 < top < height / 2
        first = browser.evaluate("document.querySelector('#answer p').textContent")
        assert first.startswith(("Claims: ", "No claim could be tested"))
        smallest = browser.evaluate(
            "Math.min(...Array.from(document.querySelectorAll('#answer *, .legend'))"
            ".map(e => parseFloat(getComputedStyle(e).fontSize)))"
        )
        assert smallest >= 11
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        assert _png_size(shot) == (width, height)
        (tmp_path / f"index-{width}.png").write_bytes(shot)
        assert browser.errors == []
    finally:
        browser.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                     deviceScaleFactor=1, mobile=False)  # fmt: skip
