"""/docs in a real headless Chromium against a real server: offline Swagger UI that renders.

Chromium comes from Debian; when it is missing the test installs it with apt-get (we are root)
and FAILS if that does not work. The screenshot is kept under ``test-artifacts/docs.png``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Deep link that opens the predict operation, so its example body is rendered.
DOCS_PATH = "/docs#/predict/predict"


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                                    check=False, env={"DEBIAN_FRONTEND": "noninteractive",
                                                      "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-2000:]}"
        found = shutil.which("chromium")
    assert found is not None, "chromium is not on PATH after apt-get install chromium"
    return found


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def docs_url(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn server on a free loopback port (stopped in the finalizer)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    log = (tmp_path_factory.mktemp("docs") / "server.log").open("wb")
    # Through run_server (what `mlservice serve` calls): uvicorn with the create_app factory.
    code = ("import sys; from pathlib import Path; from mlservice.api.server import run_server; "
            "run_server(Path(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))")
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(trained_bundle), str(port)],
        env={k: v for k, v in os.environ.items() if k != "MLSERVICE_BUNDLE"}, stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server not up within 60 s"
            try:
                if httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # poll interval, not synchronization
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def test_swagger_ui_renders_offline(docs_url: str, tmp_path: Path) -> None:
    binary = _chromium()
    url = docs_url + DOCS_PATH
    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'class="swagger-ui' in html
    assert "/api/v1/predict" in html
    assert "/api/v1/predict/batch" in html
    assert "Biscoe" in html  # from the typed example row in the request schema
    assert "Unable to render this definition" not in html

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "docs.png"
    screenshot.unlink(missing_ok=True)
    shot = _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}",
                         "--window-size=1280,2000", docs_url + "/docs")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank image
