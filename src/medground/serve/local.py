"""The app and its page run locally from Python: a uvicorn server in a thread on a free loopback port, and
Debian's headless Chromium to open the page (the tests and ``bench/bench_page.py`` use both).

Chromium's flags are the ones this kind of machine needs: with no network, its background services
(component updates, sync, QUIC) would try connections that fail; the profile is a fresh folder each time.
Selenium is a dev dependency, imported only when a browser is asked for; the driver is Debian's
``/usr/bin/chromedriver``, so Selenium Manager never downloads one.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "CHROMEDRIVER", "headless_chromium", "running"]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,900",
)


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Base URL of a uvicorn server (in a thread) over ``app`` on a free loopback port; stopped on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the local server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def headless_chromium(profile: Path) -> Any:
    """A selenium Chrome driver on Debian's headless Chromium with a fresh ``profile`` folder (quit it after)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
