"""An embedded cloud: ``python -m cloud_server`` in its own process on free loopback ports.

Used by ``pdd generate --embedded``, ``pdd bench`` and the tests. A separate process (not an
import) keeps the device SDK free of the cloud package and gives each side its own torch threads.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 180.0  # the very first run converts the bundled GGUF (~20 s on 2 cores)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedCloud:
    http_url: str  # http://127.0.0.1:PORT
    grpc_url: str  # grpc://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_target(self) -> str:
        return self.grpc_url.removeprefix("grpc://")

    def url(self, transport: str) -> str:
        return self.grpc_url if transport == "grpc" else self.http_url

    def log_tail(self, num_chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-num_chars:]

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)

    def kill(self) -> None:
        """Die at once, mid-stream if need be (fault injection)."""
        self.process.kill()
        self.process.wait()


def start_cloud(*args: str, threads: int = 1, log_dir: Path | None = None) -> EmbeddedCloud:
    """Start a cloud server and wait until ``/health`` answers 200; ``args`` go to ``serve``."""
    port, grpc_port = free_port(), free_port()
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="pdd-cloud-"))
    log_path = log_dir / f"cloud-{port}.log"
    cmd = [sys.executable, "-m", "cloud_server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--grpc-port", str(grpc_port), "--threads", str(threads), "--log-level", "warning"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd + list(args), stdout=log, stderr=subprocess.STDOUT)
    cloud = EmbeddedCloud(
        f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{grpc_port}", process, log_path
    )
    _wait_healthy(cloud)
    return cloud


def _wait_healthy(cloud: EmbeddedCloud) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if cloud.process.poll() is not None:
            raise RuntimeError(f"cloud server exited early:\n{cloud.log_tail()}")
        try:
            if httpx.get(cloud.http_url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    cloud.stop()
    raise RuntimeError(f"cloud server not healthy in {START_TIMEOUT_S:g} s:\n{cloud.log_tail()}")


@contextmanager
def embedded_cloud(*args: str, threads: int = 1) -> Iterator[EmbeddedCloud]:
    cloud = start_cloud(*args, threads=threads)
    try:
        yield cloud
    finally:
        cloud.stop()
