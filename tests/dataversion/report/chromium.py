"""Headless Chromium driven through the DevTools protocol (websockets, no browser download).

`Browser.start()` runs Debian's `chromium` with `--remote-debugging-port=0` and reads the
address it prints; `page.load(url)` navigates and waits for the load event while recording
console messages, log entries, exceptions and dialogs; `evaluate` and `screenshot` follow.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Browser:
    proc: subprocess.Popen
    ws: Any
    profile: str
    stack: contextlib.ExitStack
    events: list[dict] = field(default_factory=list)
    _next: int = 0

    @classmethod
    def start(cls, binary: str, *, width: int = 1200, height: int = 2400, timeout_s: float = 60.0) -> Browser:
        from websockets.sync.client import connect

        profile = tempfile.mkdtemp(prefix="dv-chromium-")
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        url = None
        for line in proc.stderr:  # blocks until Chromium says where it listens (or exits)
            if line.startswith("DevTools listening on "):
                url = line.split(" on ", 1)[1].strip()
                break
        if url is None:
            proc.wait(10)
            raise RuntimeError(f"chromium exited ({proc.returncode}) without a DevTools address")
        # drain stderr so a chatty browser never blocks on a full pipe
        import threading

        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        stack = contextlib.ExitStack()
        ws = stack.enter_context(connect(url, max_size=64 * 2**20, open_timeout=timeout_s))
        return cls(proc, ws, profile, stack)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout_s: float = 60.0) -> dict:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv(timeout=timeout_s))
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout_s: float = 60.0) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method and e.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            e = json.loads(self.ws.recv(timeout=timeout_s))
            if e.get("method") == method and e.get("sessionId") == session:
                return e
            self.events.append(e)

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        return Page(self, session)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout_s=10)
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self.stack.close()
        finally:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class Page:
    browser: Browser
    session: str

    def load(self, url: str) -> None:
        self.browser.send("Page.navigate", {"url": url}, session=self.session)
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        r = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=self.session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, path: str) -> None:
        r = self.browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                              session=self.session)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    def problems(self) -> list[str]:
        """Console errors and warnings, log errors, uncaught exceptions and dialogs so far."""
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log {p['entry'].get('source')}: {p['entry'].get('text')}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif m == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('message')}")
        return out


def page_url(path: str) -> str:
    return "file://" + os.path.abspath(path)
