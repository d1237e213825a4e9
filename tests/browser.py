"""The report pages in headless Chromium (skips where Chromium is not installed)."""

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium_dom(page: Path, profile: Path) -> subprocess.CompletedProcess:
    """``page`` rendered by headless Chromium: the DOM on stdout, the console on stderr.

    Asserts that every figure loaded and no script error was raised.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the HTML itself was checked")
    dom = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    n_images = dom.stdout.count("<img")
    assert n_images > 0 and f'data-figures-loaded="{n_images}/{n_images}"' in dom.stdout, dom.stdout[-500:]
    assert "Uncaught" not in dom.stderr
    return dom
