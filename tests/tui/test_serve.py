"""``atesc-tui --serve`` in a real headless Chromium: the monitor is drawn in the browser, whole.

Skipped when no ``chromium`` binary is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tui_helpers import populate

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
REPO = Path(__file__).resolve().parents[2]
SHOT = Path(tempfile.gettempdir()) / "atesc-tui-serve-monitor.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port}")


SPLASH_BG = (0x0C, 0x18, 0x1F)  # textual-serve's page and splash background


def colour_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, share of pixels that are not textual-serve's page/splash background)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    small = img.resize((img.width // 2, img.height // 2))
    colours = small.getcolors(maxcolors=1 << 20) or []
    background = SPLASH_BG
    total = small.width * small.height
    other = sum(n for n, c in colours if sum(abs(a - b) for a, b in zip(c, background)) > 10)
    return len(colours), other / total


# where xterm.js put the terminal's cells, against the page's visible width
GEOMETRY_JS = """(() => {
  const screen = document.querySelector('.xterm-screen');
  const r = screen.getBoundingClientRect();
  return {right: r.right, bottom: r.bottom, width: r.width, viewport: document.documentElement.clientWidth,
          viewport_h: document.documentElement.clientHeight, scroll_w: document.documentElement.scrollWidth};
})()"""


async def _screenshot_when_drawn(debug_port: int, url: str, timeout: float) -> tuple[bytes, dict]:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{debug_port}/json/list") as resp:
                    targets = await resp.json(content_type=None)
                page = next(t for t in targets if t.get("type") == "page")
                break
            except Exception:  # noqa: BLE001 - chromium still starting
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10_000))

            async def call(method: str, **params):
                mid = next(ids)
                await ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("id") == mid:
                        return data.get("result", {})
                raise AssertionError("devtools connection closed")

            await call("Page.navigate", url=url)
            import base64

            deadline = time.monotonic() + timeout
            best = b""
            last_stats = (0, 0.0)
            while time.monotonic() < deadline:
                await asyncio.sleep(1.5)
                shot = base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])
                stats = colour_stats(shot)
                best = shot
                # the splash has a handful of colours; the monitor's charts and header many more,
                # and the picture stops changing once the app has drawn its first frames
                if stats[0] > 200 and stats[1] > 0.6 and abs(stats[1] - last_stats[1]) < 0.01:
                    break
                last_stats = stats
            geometry = (await call("Runtime.evaluate", expression=GEOMETRY_JS, returnByValue=True))["result"]["value"]
            return best, geometry


def test_serve_monitor_in_headless_chromium(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    populate(runs)
    port, debug_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), TZ="UTC")
    server = subprocess.Popen(
        [sys.executable, "-m", "atesc_tui.app_main", "--serve", "--port", str(port), "--runs-root", str(runs),
         "--open", str(runs / "ntl-atesc-0003")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    profile = tempfile.mkdtemp(prefix="atesc-chromium-")
    browser = None
    try:
        wait_port(port, 30)
        # bound to loopback only by default
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout if shutil.which("ss") else ""
        if listening:
            local = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(f":{port}")]
            assert local and all(a.startswith("127.0.0.1:") for a in local), local
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,800", f"--remote-debugging-port={debug_port}",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        png, geometry = asyncio.run(_screenshot_when_drawn(debug_port, f"http://127.0.0.1:{port}/", timeout=60))
        SHOT.write_bytes(png)
        n_colours, drawn = colour_stats(png)
        assert n_colours > 200 and drawn > 0.6, (n_colours, drawn, SHOT)
        # no column clipped: the terminal's cells end inside the page, and the page does not scroll sideways
        assert geometry["right"] <= geometry["viewport"] and geometry["scroll_w"] <= geometry["viewport"], geometry
        assert geometry["bottom"] <= geometry["viewport_h"], geometry
    finally:
        for proc in (browser, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
    log = server.stdout.read().decode(errors="replace") if server.stdout else ""
    assert "Traceback" not in log, log[-2000:]
