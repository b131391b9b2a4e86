"""Start the app in a child process and wait until it answers: for tests and smoke checks.

    with running_app(weights_dir="weights") as url:   # python app.py on a free port
        requests.post(url + "/api/caption", ...)

    python -m demo.server weights                    # start, check /api/health, stop
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_app(weights_dir: str | Path | None = None, command: str = "python", port: int | None = None,
                env: dict | None = None, log_file: str | Path | None = None, timeout: float = 180.0):
    """Run the app and yield its base URL once it answers; stop it afterwards (see :func:`app_process`)."""
    with app_process(weights_dir, command, port, env, log_file, timeout) as (url, _process):
        yield url


@contextlib.contextmanager
def app_process(weights_dir: str | Path | None = None, command: str = "python", port: int | None = None,
                env: dict | None = None, log_file: str | Path | None = None, timeout: float = 180.0):
    """Run the app (``command``: "python" for `python app.py`, "uvicorn" for `uvicorn app:app`) on
    loopback and yield (base URL, process) once GET /api/health answers; stop it afterwards.
    Raises RuntimeError if the app exits first, TimeoutError if it does not answer in time."""
    port = port or free_port()
    child_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                 "GRADIO_ANALYTICS_ENABLED": "False", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if weights_dir is not None:
        child_env["CAPTION_WEIGHTS_DIR"] = str(Path(weights_dir).resolve())
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), child_env.get("PYTHONPATH")]))
    if command == "python":
        args = [sys.executable, "app.py"]
    elif command == "uvicorn":
        args = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
    else:
        raise ValueError(f"command must be 'python' or 'uvicorn', not {command!r}")
    log = open(log_file, "wb") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(args, cwd=ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, url, timeout, log_file)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_file:
            log.close()


def _wait_until_up(process: subprocess.Popen, url: str, timeout: float, log_file) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = Path(log_file).read_text(errors="replace")[-3000:] if log_file else "(no log kept)"
            raise RuntimeError(f"the app exited with code {process.returncode} before serving:\n{tail}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the app did not answer at {url} within {timeout:.0f} s")


if __name__ == "__main__":
    started = time.perf_counter()
    with running_app(sys.argv[1] if len(sys.argv) > 1 else None) as base:
        with urllib.request.urlopen(base + "/api/health") as answer:
            print(f"{base} up after {time.perf_counter() - started:.1f} s: {answer.read().decode()}")
