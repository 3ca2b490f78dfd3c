"""Headless Chromium for tests (Debian's `chromium`, installed by `make test`): screenshots, DOM dumps, and a check
that a page loads nothing from the network.

Network check: the page is served from a loopback server, and Chromium is told to send every other request
through a proxy that only records what it is asked for. Chromium never proxies loopback, so the page itself
loads directly; any external resource (http, or an https CONNECT) lands in the proxy's log.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import threading
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--hide-scrollbars",
         "--force-device-scale-factor=1", "--no-first-run", "--disable-extensions",
         # the browser's own traffic (component updates, time sync, sign-in), so only the page's requests remain
         "--disable-component-update", "--component-updater=disable-background-downloads", "--disable-sync",
         "--no-pings", "--disable-default-apps",
         "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
         "OptimizationGuideModelDownloading,NetworkTimeServiceQuerying"]
# ... and what it still sends with all of those flags (Chromium 156): its updater and account service, never a page's
BROWSER_HOSTS = re.compile(r"^(CONNECT |\w+ http://)(update\.googleapis\.com|accounts\.google\.com|clients\d\.google\.com"
                           r"|[\w.-]+\.gvt1\.com)[:/]")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not found on PATH (`make test` installs Debian's chromium with apt-get)")
    return exe


def run(url: str, *args: str, timeout: float = 60) -> str:
    p = subprocess.run([chromium(), *FLAGS, *args, url], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def screenshot(url: str, png: str, size=(1200, 2400)) -> str:
    run(url, f"--window-size={size[0]},{size[1]}", f"--screenshot={png}")
    return png


def dump_dom(url: str, *args: str) -> str:
    return run(url, "--dump-dom", *args)


def layout(page: str, selector: str, size=(1200, 2400)) -> list[dict]:
    """Bounding boxes (px) of the elements matching `selector`, laid out at `size` like `screenshot`.

    A copy of the page gets a script that writes them into an attribute; it changes nothing on screen."""
    probe = page + ".layout.html"
    script = ("<script>document.body.setAttribute('data-boxes',JSON.stringify(Array.from("
              f"document.querySelectorAll({json.dumps(selector)})).map(e=>{{const r=e.getBoundingClientRect();"
              "return {x:r.x,y:r.y,w:r.width,h:r.height}})))</script>")
    with open(page, encoding="utf-8") as f, open(probe, "w", encoding="utf-8") as out:
        out.write(f.read().replace("</body>", script + "</body>"))
    dom = dump_dom(f"file://{probe}", f"--window-size={size[0]},{size[1]}")
    os.unlink(probe)
    return json.loads(html.unescape(re.search(r'data-boxes="([^"]*)"', dom)[1]))


class _Log(BaseHTTPRequestHandler):
    def record(self):
        self.server.requests.append(f"{self.command} {self.path}")
        self.send_error(404)

    do_GET = do_POST = do_HEAD = do_CONNECT = record

    def log_message(self, *args):
        pass


class _Files(SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextmanager
def _serve(handler):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.requests = []
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def requests_made(page: str) -> tuple[list[str], list[str]]:
    """Load `page` in Chromium; return (paths asked of the page's own server, requests sent anywhere else, less
    the browser's own service traffic)."""
    folder, name = os.path.split(os.path.abspath(page))
    with _serve(partial(_Files, directory=folder)) as files, _serve(_Log) as proxy:
        dump_dom(f"http://127.0.0.1:{files.server_address[1]}/{name}",
                 f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}", "--virtual-time-budget=3000")
        return list(files.requests), [r for r in proxy.requests if not BROWSER_HOSTS.match(r)]
