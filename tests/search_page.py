"""Drive the search page as a person would: start `contrastkit serve`, type a query in headless Chromium.

Used by tests/test_serve_browser.py, and run by hand to make the README's screenshot from a real model:

    .venv/bin/python tests/search_page.py runs/demo "a large red circle" docs/search_page.png

Chromium is Debian's (``/usr/bin/chromium``; ``.ci/run`` installs it), driven by Playwright's Python API.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
# As the machine notes say: no sandbox as root, and no background networking on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONTRASTKIT = Path(sys.executable).with_name("contrastkit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(index: Path, *extra: str) -> Iterator[str]:
    """`contrastkit serve INDEX` on a free loopback port; yields its base URL, stops it afterwards."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [str(CONTRASTKIT), "serve", str(index), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                out = server.stdout.read().decode() if server.stdout else ""
                raise RuntimeError(f"contrastkit serve exited with {server.returncode}:\n{out}")
            try:
                urllib.request.urlopen(url + "/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("contrastkit serve did not answer within 60 s") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def search_in_browser(url: str, query: str, screenshot: Path, expect: int = 8) -> list[dict[str, str]]:
    """Open the page, type ``query``, press Enter, wait for the grid; save a screenshot. The result cards in
    page order: id, caption text and whether the thumbnail loaded."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1180, "height": 760})
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('about').textContent.includes('images')")
        page.fill("#query", query)
        page.press("#query", "Enter")
        page.wait_for_selector(f".hit:nth-child({expect}) img")
        page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete)")
        cards = page.eval_on_selector_all(
            ".hit",
            "cards => cards.map(c => ({id: c.dataset.id, caption: c.querySelector('.caption').textContent,"
            " loaded: String(c.querySelector('img').naturalWidth > 0)}))",
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot))
        browser.close()
    return cards


def main(argv: list[str]) -> int:
    run, query, out = argv
    index = Path(tempfile.mkdtemp(prefix="search_page_")) / "index"
    subprocess.run(
        [str(CONTRASTKIT), "index", run, "--images", "synthetic:shapes", "--split", "test", "--out", str(index)],
        check=True,
    )
    with serving(index) as url:
        cards = search_in_browser(url, query, Path(out))
    print("\n".join(f"{c['id']}: {c['caption']}" for c in cards[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
