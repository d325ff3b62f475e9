"""``hsm report`` end to end: a real sweep, the real CLI, the page in real headless Chromium.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: no
port is opened). Every request the page makes is recorded from ``Network.requestWillBeSent``;
host names resolve nowhere (``--host-resolver-rules``), so nothing could leave the machine
even if the page tried.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hsm.state import Store
from tests.hsmcli import wait_for

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS_IMAGE = REPO / "docs" / "images" / "report.png"  # refreshed with HSM_UPDATE_DOCS_IMAGES=1
HSM = [str(Path(sys.executable).with_name("hsm"))]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
    "--mute-audio",
    "--disable-extensions",
    "--remote-debugging-pipe",
]
HOSTILE = "</script><img src=x onerror=alert(1)><!--"
REASON = "scratch disk full (e2e)"


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def need_chromium() -> str:
    binary = chromium_binary()
    if binary is not None:
        return binary
    message = "chromium is not installed: run scripts/install-testbed-packages as root"
    if os.environ.get("CI") or os.environ.get("HSM_FORBID_SKIPS"):
        pytest.fail(message)
    pytest.skip(message)


class CdpError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium and one page, driven over the DevTools protocol on a pipe."""

    def __init__(
        self, binary: str, *, width: int = 1400, height: int = 1000, log_path: Path | None = None
    ) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="hsm-chromium-"))
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds_3_and_4() -> None:  # the pipe that --remote-debugging-pipe expects
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self._log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=fds_3_and_4,
            close_fds=False,
            start_new_session=True,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._pending: list[dict[str, Any]] = []
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session = ""
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)
            attached = self.send(
                "Target.attachToTarget",
                {"targetId": target["targetId"], "flatten": True},
                browser=True,
            )
            self.session = attached["sessionId"]
            for domain in ("Page", "Network", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.close()
            raise

    # -- the protocol ----------------------------------------------------------------------
    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self._from_chrome], [], [], max(0.0, timeout))
        if not ready:
            return
        chunk = os.read(self._from_chrome, 1 << 20)
        if not chunk:
            raise CdpError(f"chromium closed the pipe (exit {self.proc.poll()})")
        self._buffer += chunk
        *messages, self._buffer = self._buffer.split(b"\0")
        for raw in messages:
            self._pending.append(json.loads(raw))

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        browser: bool = False,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if not browser:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self._pending):
                if msg.get("id") == ident:
                    del self._pending[i]
                    if "error" in msg:
                        raise CdpError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg.get("result", {})
                    return result
            self._drain_events()
            if time.monotonic() > deadline:
                raise CdpError(f"{method}: no answer in {timeout} s")
            self._read(deadline - time.monotonic())

    def _drain_events(self) -> None:
        keep: list[dict[str, Any]] = []
        for msg in self._pending:
            (keep if "id" in msg else self.events).append(msg)
        self._pending[:] = keep

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self._drain_events()
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise CdpError(f"no {method} event in {timeout} s")
            self._read(min(0.2, deadline - time.monotonic()))

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise CdpError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    # -- pages -----------------------------------------------------------------------------
    def open(self, path: Path, *, timeout: float = 30.0) -> float:
        """Load a file and wait until its script has drawn it; the seconds that took."""
        self.events.clear()
        start = time.monotonic()
        self.send("Page.navigate", {"url": path.resolve().as_uri()})
        self.wait_event("Page.loadEventFired", timeout)
        while self.evaluate("document.body && document.body.dataset.rendered") != "true":
            if time.monotonic() - start > timeout:
                raise CdpError(f"{path}: the report was not drawn in {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - start

    def requests(self) -> list[str]:
        self._drain_events()
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e.get("method") == "Network.requestWillBeSent"
        ]

    def problems(self) -> list[str]:
        """Script exceptions, console errors and browser log errors (such as CSP refusals)."""
        self._drain_events()
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails"))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                out.append(json.dumps(params.get("args"))[:500])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", "")[:500])
        return out

    def click(self, selector: str) -> None:
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path, *, full_page: bool = True, width: int = 1400) -> None:
        if full_page:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": width,
                    "height": min(height, 8000),
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
        self.evaluate("window.scrollTo(0, 0)")
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    # -- the end ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop this Chromium and every process it started (its own session), by pid."""
        with contextlib.suppress(Exception):
            self.send("Browser.close", browser=True, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for pid in [self.proc.pid, *session_members(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def session_members(sid: int) -> list[int]:
    """Live processes of a session (Chromium's zygote, renderers and helpers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == sid:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


@contextlib.contextmanager
def chromium(**kw: Any) -> Iterator[Chromium]:
    browser = Chromium(need_chromium(), **kw)
    try:
        yield browser
    finally:
        browser.close()
        assert not session_members(browser.proc.pid), "a Chromium process outlived close()"


# -- the sweep --------------------------------------------------------------------------------
CONFIG = """\
local:
  max_parallel_jobs: 2
disk:
  project_min_free: 1MB
  task_min_free: 1MB
  warn_below: 1MB
  kill_below: 1MB
distributed:
  max_retries: 0
  enable_source_failsafe: false
  auto_disable_unhealthy_sources: false
  health_check_interval: 1
"""
SCRIPT = """\
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
time.sleep(0.8)
seed, lr = int(args["seed"]), float(args["lr"])
if seed == 3:
    print("epoch 1 done", file=sys.stderr)
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "train.py", line 9, in <module>', file=sys.stderr)
    print(f"ValueError: loss is nan at step {int(lr * 100000)}", file=sys.stderr)
    sys.exit(1)
metrics = {"loss": round(lr * 10 / seed, 4), "eval": {"acc": 0.5 + seed / 10}}
with open(os.path.join(os.environ["HSM_TASK_DIR"], "metrics.json"), "w") as f:
    json.dump(metrics, f)
"""
SWEEP = f"""\
script: train.py
sweep:
  grid:
    seed: [1, 2, 3]
    lr: [0.1, 0.01]
defaults:
  name: {json.dumps(HOSTILE)}
"""


def hsm(project: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*HSM, *args], cwd=project, capture_output=True, text=True, timeout=120)
    if check is not None:
        assert done.returncode == check, (args, done.returncode, done.stdout, done.stderr)
    return done


def record_health(store: Store, free: int, total: int = 50 * 10**9) -> None:
    store.record_health(
        source="local",
        reachable=True,
        disk_path="/",
        free_bytes=free,
        total_bytes=total,
        load1=0.5,
        cores=2,
        memory_percent=30.0,
        disk_status="healthy",
        status="healthy",
        detail=None,
        consecutive_failures=0,
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A sweep run, reported while running, run again after its source was disabled and
    re-enabled, then reported: the facts the page must show."""
    project = tmp_path_factory.mktemp("report-e2e")
    (project / "hsm_config.yaml").write_text(CONFIG)
    (project / "train.py").write_text(SCRIPT)
    (project / "sweep.yaml").write_text(SWEEP)
    running = subprocess.Popen(
        [*HSM, "run", "sweep.yaml", "--name", "e2e"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        db = project / ".hsm" / "hsm.db"

        def started() -> bool:
            if running.poll() is not None:
                out, err = running.communicate()
                pytest.fail(f"hsm run ended early ({running.returncode}): {out}{err}")
            return db.exists()

        wait_for(started, what="the sweep to start", timeout=30)
        store = Store.open(db)
        wait_for(
            lambda: started() and bool(store.attempts("e2e", active_only=True)),
            what="a running task",
            timeout=30,
        )
        during = hsm(project, "report", "e2e", "-o", "running.html")
        out, err = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 1, (out, err)
    if not store.health_samples("local"):  # the sweep made none: record some (in its window)
        for free in (30 * 10**9, 25 * 10**9, 20 * 10**9):
            record_health(store, free)
            time.sleep(0.1)
    hsm(project, "distributed", "disable", "local", "--reason", REASON)
    hsm(project, "distributed", "enable", "local")
    hsm(project, "resume", "e2e", "--retry-failed", check=1)
    written = hsm(project, "report", "e2e")
    status = hsm(project, "status", "e2e", check=None)
    attempts = store.attempts("e2e")
    store.close()
    return {
        "project": project,
        "during": during,
        "written": written,
        "status": status,
        "attempts": attempts,
        "report": project / "runs" / "e2e" / "report.html",
        "running": project / "running.html",
    }


def page_facts(browser: Chromium) -> dict[str, Any]:
    return dict(
        browser.evaluate("""(() => {
      const all = (q) => Array.from(document.querySelectorAll(q));
      const data = JSON.parse(document.getElementById('hsm-data').textContent);
      return {
        bars: all('rect.bar').length,
        outcomes: Object.fromEntries(['completed', 'failed', 'lost', 'cancelled', 'running']
          .map((o) => [o, all('rect.bar-' + o).length])),
        lanes: all('svg.timeline text.lane-label').map((e) => e.textContent),
        disabled: all('line.marker-disabled').map((e) => e.dataset.source),
        enabled: all('line.marker-enabled').map((e) => e.dataset.source),
        markerTitles: all('line.marker-disabled title').map((e) => e.textContent),
        eventRows: all('tr.event').map((e) => e.textContent),
        groups: all('tr.failure-group').map((e) => ({count: +e.dataset.count,
          cause: e.dataset.cause, text: e.textContent})),
        diskCharts: all('.health-source[data-source="local"] svg.chart-disk').length,
        healthPaths: all('.health-source path.series').length,
        warningLines: all('svg.chart-disk line.level-warning').length,
        criticalLines: all('svg.chart-disk line.level-critical').length,
        sourceRows: all('tr.source-row').map((e) => e.textContent),
        metricRows: all('table.metrics-table tbody tr').length,
        pcLines: all('path.pc-line').length,
        resume: document.getElementById('resume-command').textContent,
        retry: document.getElementById('retry-command').textContent,
        banner: all('.running-banner').length,
        errors: document.body.dataset.errors || null,
        hostile: data.tasks[0].params.name,
        scripts: all('script').length,
        images: all('img').length,
      };
    })()""")
    )


# -- the tests --------------------------------------------------------------------------------
def test_the_report_is_written_and_status_points_to_it(swept: dict[str, Any]) -> None:
    assert swept["written"].stdout.strip() == f"wrote {swept['report']}"
    assert swept["report"].stat().st_size > 10_000
    assert "report: hsm report e2e" in swept["status"].stdout
    assert swept["during"].stdout.strip().startswith("wrote ")


def test_the_page_shows_the_sweep_in_chromium_without_any_request(swept: dict[str, Any]) -> None:
    attempts = swept["attempts"]
    with chromium() as browser:
        seconds = browser.open(swept["report"])
        facts = page_facts(browser)
        requests = browser.requests()
        problems = browser.problems()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(ARTIFACTS / "report-full.png")
        # Click a failed bar: the panel shows the task and the end of its error log.
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 1500, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.click("rect.bar-failed")
        detail = browser.evaluate(
            "[document.getElementById('detail').hidden,"
            " document.getElementById('detail-body').textContent]"
        )
        browser.screenshot(ARTIFACTS / "report.png", full_page=False)
        # Close the panel, then sort the metrics table by loss, largest first (two clicks).
        browser.click("#detail-close")
        closed = browser.evaluate("document.getElementById('detail').hidden")
        # The header's own click handler, twice (not mouse events at coordinates, which
        # land elsewhere when the page reflows late on a loaded machine).
        sorted_by = browser.evaluate(
            "(() => { const th = document.querySelector("
            "\"table.metrics-table th[title='metric']\"); th.click(); th.click();"
            " return [th.textContent, th.className]; })()"
        )
        losses = browser.evaluate(
            "Array.from(document.querySelectorAll('table.metrics-table tbody tr'))"
            ".map((r) => r.children[r.children.length - 2].textContent)"
        )
        problems += browser.problems()

    assert seconds < 10
    assert requests == [swept["report"].resolve().as_uri()], requests
    assert problems == [] and facts["errors"] is None
    # Timeline: one bar per attempt, coloured by outcome.
    assert facts["bars"] == len(attempts) == 8
    assert facts["outcomes"] == {
        "completed": 4,
        "failed": 4,
        "lost": 0,
        "cancelled": 0,
        "running": 0,
    }
    assert facts["lanes"] == ["local #0", "local #1"]
    assert detail[0] is False and closed is True
    assert "ValueError: loss is nan at step" in detail[1] and "seed" in detail[1]
    # The source was disabled (with its reason) and enabled again between the two runs.
    assert facts["disabled"].count("local") >= 2  # on the timeline and the health charts
    assert "local" in facts["enabled"]
    assert any(REASON in t for t in facts["markerTitles"])
    assert any(REASON in row for row in facts["eventRows"])
    # One bug, one row: the 2 failed tasks' errors differ only in numbers.
    assert [(g["count"], g["cause"]) for g in facts["groups"]] == [(2, "task_failed")]
    assert "ValueError: loss is nan" in facts["groups"][0]["text"]
    # Health: disk free with its warning and critical levels, from the recorded samples.
    assert facts["diskCharts"] == 1 and facts["healthPaths"] >= 3
    assert facts["warningLines"] == 1 and facts["criticalLines"] == 1
    assert facts["sourceRows"][0].startswith("localyes8")
    # Parameters against metrics: the 4 completed tasks, in a table and a plot.
    assert facts["metricRows"] == 4 and facts["pcLines"] == 4
    assert sorted_by[0] == "loss" and "sorted-desc" in sorted_by[1], sorted_by
    assert [float(x) for x in losses] == sorted((float(x) for x in losses), reverse=True)
    assert (facts["resume"], facts["retry"]) == ("hsm resume e2e", "hsm resume e2e --retry-failed")
    # The hostile parameter is data, not markup: no extra script or image appeared.
    assert facts["hostile"] == HOSTILE
    assert (facts["scripts"], facts["images"]) == (2, 0)
    if os.environ.get("HSM_UPDATE_DOCS_IMAGES") or not DOCS_IMAGE.exists():
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "report.png", DOCS_IMAGE)


def test_a_report_made_while_the_sweep_runs_shows_the_state_so_far(swept: dict[str, Any]) -> None:
    with chromium() as browser:
        browser.open(swept["running"])
        facts = page_facts(browser)
        problems = browser.problems()
    assert problems == [] and facts["errors"] is None
    assert facts["banner"] == 1
    assert facts["outcomes"]["running"] >= 1
    assert facts["bars"] == sum(facts["outcomes"].values())


def test_the_request_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    """The no-request assertion above would catch a fetch: here is one it catches."""
    page = tmp_path / "fetching.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="missing.css">'
        '</head><body><img src="http://hsm-canary.invalid/pixel.png">'
        "<script>document.body.dataset.rendered = 'true'</script></body></html>"
    )
    with chromium() as browser:
        browser.open(page)
        time.sleep(0.3)
        requests = browser.requests()
    assert page.as_uri() in requests
    assert (tmp_path / "missing.css").as_uri() in requests
    assert "http://hsm-canary.invalid/pixel.png" in requests


def test_report_of_an_unknown_sweep_is_bad_input(swept: dict[str, Any]) -> None:
    done = hsm(swept["project"], "report", "nope", check=2)
    assert "unknown sweep ID 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_report_to_stdout(swept: dict[str, Any]) -> None:
    done = hsm(swept["project"], "report", "e2e", "-o", "-")
    assert done.stdout.startswith("<!DOCTYPE html>") and done.stdout.rstrip().endswith("</html>")
