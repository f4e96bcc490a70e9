"""Shared fixtures: real cloud servers on loopback and the real bundled model, loaded once."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SERVER_START_TIMEOUT_S = 180.0  # the first run converts the bundled GGUF (~20 s on 2 cores)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class CloudServer:
    """A ``python -m cloud_server`` subprocess on loopback."""

    http_url: str  # http://127.0.0.1:PORT
    grpc_url: str  # grpc://127.0.0.1:PORT
    grpc_target: str  # 127.0.0.1:PORT, for grpc.insecure_channel
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

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


def start_cloud_server(log_dir: Path, *args: str) -> CloudServer:
    """Start a cloud server with ``--threads 1`` on free ports and wait until /health is 200."""
    port, grpc_port = free_port(), free_port()
    log_path = log_dir / f"cloud-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "cloud_server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--threads",
        "1",
        "--log-level",
        "warning",
        *args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = CloudServer(
        http_url=f"http://127.0.0.1:{port}",
        grpc_url=f"grpc://127.0.0.1:{grpc_port}",
        grpc_target=f"127.0.0.1:{grpc_port}",
        process=process,
        log_path=log_path,
    )
    _wait_healthy(server)
    return server


def _wait_healthy(server: CloudServer) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"cloud server exited early:\n{server.log_tail()}")
        try:
            if httpx.get(server.http_url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"cloud server not healthy in {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}"
    )


@pytest.fixture(scope="session")
def cloud_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CloudServer]:
    """One default cloud server (max 4 concurrent requests) shared by the session."""
    server = start_cloud_server(tmp_path_factory.mktemp("cloud"))
    yield server
    server.stop()


@pytest.fixture
def start_cloud(tmp_path: Path) -> Iterator[Callable[..., CloudServer]]:
    """Factory: ``start_cloud("--max-concurrent", "1")``; every server started is stopped after."""
    started: list[CloudServer] = []

    def start(*args: str) -> CloudServer:
        server = start_cloud_server(tmp_path, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def loaded_model():
    """The bundled model in this process, on one thread (the machine's cores are shared)."""
    from common.model import load_model
    from common.platform import set_threads

    set_threads(1)
    return load_model()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``cuda`` / ``npu`` tests where that hardware is absent (asked once, at collection)."""
    from common.platform import available_platforms

    present = set(available_platforms())
    for item in items:
        for kind in ("cuda", "npu"):
            if kind in item.keywords and kind not in present:
                item.add_marker(pytest.mark.skip(reason=f"no {kind} device on this machine"))
