"""The course in the browser: the JupyterLite build, opening it, and (where it can) running it.

The build is tested here (about 30 s; it fetches pure-Python wheels from PyPI). Opening it in
headless Chromium (Debian's chromium and chromium-driver, driven over the WebDriver protocol
with the standard library) needs nothing else; the test skips, saying so, where they are not
installed. Running a notebook's cells needs WebAssembly builds of numpy and pandas and a
bundled Pyodide runtime; ``tools/lite.py check`` lists what is missing, and the kernel test
skips with exactly that list.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("jupyterlite_core", reason="install the [docs] extra (dev.py installs it)")
pytest.importorskip("jupyterlite_pyodide_kernel", reason="install the [docs] extra")


def _lite():
    spec = importlib.util.spec_from_file_location("lite_tool", ROOT / "tools" / "lite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "lite.py"), "build"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ROOT / "build" / "lite"


def test_build_serves_every_notebook_and_the_virtlab_wheel(built):
    import nbformat

    assert (built / "lab" / "index.html").is_file()
    for source in sorted((ROOT / "notebooks").glob("*.md")):
        staged = built / "files" / f"{source.stem}.ipynb"
        assert staged.is_file(), staged
        notebook = nbformat.read(staged, as_version=4)
        first = notebook.cells[0]
        assert first.cell_type == "code" and "%pip install -q virtlab otter-grader" in first.source
        text = staged.read_text(encoding="utf-8")   # the student version: no key in it
        for secret in ("require_fresh", "# HIDDEN", "# SOLUTION", "# BEGIN QUESTION"):
            assert secret not in text, (staged.name, secret)
        assert sum(c.source.startswith("grader.check(") for c in notebook.cells) >= 3
    wheels = list((built / "pypi").glob("virtlab-*.whl"))
    assert len(wheels) == 1
    index = json.loads((built / "pypi" / "all.json").read_text(encoding="utf-8"))
    assert {"virtlab", "simpy"} <= set(index) and ({"tomli-w", "tomli_w"} & set(index))
    config = json.loads((built / "jupyter-lite.json").read_text(encoding="utf-8"))
    data = config["jupyter-config-data"]
    extensions = [e["name"] for e in data["federated_extensions"]]
    assert "@jupyterlite/pyodide-kernel-extension" in extensions
    kernel = data["litePluginSettings"]["@jupyterlite/pyodide-kernel-extension:kernel"]
    assert kernel["disablePyPIFallback"] is True      # nothing from PyPI at run time


@contextlib.contextmanager
def _serve(directory: Path):
    """Serve ``directory`` on 127.0.0.1 (a free port) for the duration of the block."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Browser:
    """Headless Chromium driven by chromedriver over the W3C WebDriver protocol (stdlib only)."""

    def __init__(self, chromium: str, chromedriver: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.driver = subprocess.Popen([chromedriver, f"--port={port}"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.profile = tempfile.TemporaryDirectory(prefix="virtlab-chromium-")
        self.session = None
        deadline = time.monotonic() + 30
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline or self.driver.poll() is not None:
                    self.close()
                    pytest.fail("chromedriver did not start within 30 s")
                time.sleep(0.2)
        # The flags this machine's Chromium needs headless as root with no outside network.
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                f"--user-data-dir={self.profile.name}"]
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}}}})["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None):
        request = urllib.request.Request(
            self.base + path, method=method, headers={"Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def text_when(self, url: str, wanted: list[str], timeout_s: float = 90.0) -> str:
        """Open ``url``; the page's text once it shows every string in ``wanted`` (or fail)."""
        self._call("POST", f"/session/{self.session}/url", {"url": url})
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = self._call("POST", f"/session/{self.session}/execute/sync",
                              {"script": "return document.body ? document.body.innerText : ''",
                               "args": []})
            if all(w in text for w in wanted):
                return text
            time.sleep(0.5)
        missing = [w for w in wanted if w not in text]
        pytest.fail(f"{url} did not show {missing} within {timeout_s:g} s; it showed "
                    f"{text[:400]!r}")

    def close(self) -> None:
        if self.session is not None:
            with contextlib.suppress(OSError):
                self._call("DELETE", f"/session/{self.session}")
        self.driver.terminate()
        try:
            self.driver.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.driver.kill()
            self.driver.wait()
        self.profile.cleanup()


@pytest.fixture(scope="module")
def browser():
    chromium, chromedriver = _lite().chromium(), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("no headless Chromium and ChromeDriver here (Debian: apt-get install "
                    "chromium chromium-driver); the build itself is tested above")
    opened = _Browser(chromium, chromedriver)
    yield opened
    opened.close()


def test_the_built_site_opens_in_headless_chromium(built, browser):
    names = [f"{p.stem}.ipynb" for p in sorted((ROOT / "notebooks").glob("*.md"))]
    with _serve(built) as site:
        listing = browser.text_when(f"{site}/tree/index.html", names)
        assert "JupyterLite" in listing or "Files" in listing
        page = browser.text_when(f"{site}/notebooks/index.html?path={names[0]}",
                                 ["Three ways to virtualize I/O", "import otter",
                                  "%pip install -q virtlab otter-grader"])
        assert "# SOLUTION" not in page


def test_first_notebook_runs_in_headless_chromium():
    missing = _lite().missing_for_running()
    if missing:
        pytest.skip("cannot run the browser build's kernel here: " + "; ".join(missing))
    pytest.fail("tools/lite.py check found nothing missing, but this test does not run a "
                "kernel yet: bundle the Pyodide distribution, then run the first cells here")
