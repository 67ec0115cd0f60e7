"""End to end in a real browser: JupyterLab serves the course, Chromium runs 00-setup like a student.

Needs Debian's ``chromium`` (/usr/bin/chromium, or ``LAB_CHROMIUM``) and the ``playwright`` Python
package (the ``test`` extra); Playwright's own browser downloads are not used. The notebooks are copied
to a temporary directory first, so JupyterLab's autosave never writes outputs into the repository.
The screenshot is saved to ``runs/e2e/00-setup.png`` for a human to look at.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from labhelpers import db

PROJECT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = PROJECT / "runs" / "e2e"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def jupyter_lab(fresh_dsn: str, tmp_path: Path) -> Iterator[str]:
    """A JupyterLab server on a copy of notebooks/, its kernels pointed at a fresh database; yields its URL."""
    root = tmp_path / "notebooks"
    shutil.copytree(PROJECT / "notebooks", root)
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Render every cell (no virtual scrolling), so the DOM holds every output we check.
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    # No "get notified about Jupyter news?" toast over the notebook (and no network call for it).
    apputils = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    apputils.mkdir(parents=True)
    (apputils / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "LAB_DSN": fresh_dsn,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "jupyter.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"{url}/lab/tree/{{}}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_00_setup_runs_all_cells_in_jupyterlab(jupyter_lab: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(jupyter_lab.format("00-setup.ipynb"), timeout=60_000)
            # the notebook is open and its kernel has started
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-StatusBar-TextItem, .jp-Toolbar-kernelStatus')]"
                ".some(e => /Idle/.test(e.textContent) || /Idle/.test(e.getAttribute('title') || ''))",
                timeout=60_000,
            )
            # Run > Run All Cells, from the menu bar like a student
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            code_cells = page.locator(".jp-Notebook .jp-CodeCell").count()
            assert code_cells > 3
            # done when every code cell shows an execution count and none is queued or running ([*])
            page.wait_for_function(
                """(n) => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]
                        .map(e => e.textContent.trim());
                    return prompts.length === n && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
                }""",
                arg=code_cells,
                timeout=180_000,
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(SCREENSHOTS / "00-setup.png"))
            page.locator(".jp-Notebook .jp-Cell").last.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(SCREENSHOTS / "00-setup-end.png"))
            # no error output anywhere: tracebacks and stderr render with this MIME type
            errors = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
            texts = [errors.nth(i).inner_text() for i in range(errors.count())]
            bad = [t for t in texts if "Traceback" in t or "Error" in t]
            assert not bad, f"error output in the notebook:\n{bad[0][:2000]}"
            rendered = page.locator(".jp-OutputArea-output .jp-RenderedText")
            bad = [t for t in (rendered.nth(i).inner_text() for i in range(rendered.count())) if "Error" in t]
            assert not bad, f"error text in the notebook:\n{bad[0][:2000]}"
            assert page.locator(".jp-OutputArea-output", has_text="All good: PostgreSQL").count() == 1
        finally:
            browser.close()
