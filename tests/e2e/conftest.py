"""Debian's Prometheus servers, started once per test session on 127.0.0.1 with explicit flags.

Each server runs from its Debian binary on a free high port, with its data directory (and log file)
under pytest's session temp dir, and is skipped with the install command when the binary is missing.
A Prometheus or Alertmanager fixture is one more ``start_debian_server`` call beside ``pushgateway``.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, stop_process_group

PUSHGATEWAY_BINARY = Path("/usr/bin/prometheus-pushgateway")


@dataclass(frozen=True)
class DebianServer:
    """A running server: its base URL, its data directory and the file its output goes to."""

    url: str
    data_dir: Path
    log_file: Path
    process: subprocess.Popen[bytes]


def _log_tail(log_file: Path, limit: int = 4000) -> str:
    return log_file.read_text(errors="replace")[-limit:] if log_file.exists() else ""


def _wait_until_ready(server: DebianServer, ready_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.process.args[0]} exited with {server.process.returncode} before it was ready:\n"
                f"{_log_tail(server.log_file)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            # /-/ready answers 503 while the server is still loading, so only 200 counts.
            if httpx.get(server.url + ready_path, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{server.url}{ready_path} was not ready within {timeout}s:\n{_log_tail(server.log_file)}")


@contextlib.contextmanager
def start_debian_server(
    tmp_path_factory: pytest.TempPathFactory,
    binary: Path,
    make_args: Callable[[str, Path], Sequence[str]],
    *,
    package: str,
    ready_path: str = "/-/ready",
    timeout: float = 30.0,
) -> Iterator[DebianServer]:
    """Run ``binary`` with ``make_args(listen_address, data_dir)`` until the block ends.

    ``make_args`` may write config files into ``data_dir`` before returning the flags. The server's
    output goes to a log file in ``data_dir`` rather than a pipe nobody reads (a full pipe would block
    it), and is shown when it fails to start.
    """
    if not binary.exists():
        pytest.skip(f"{binary} is not installed (apt-get install -y --no-install-recommends {package})")
    address = f"127.0.0.1:{free_port()}"
    data_dir = tmp_path_factory.mktemp(binary.name)
    log_file = data_dir / f"{binary.name}.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [str(binary), *make_args(address, data_dir)],
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DebianServer(f"http://{address}", data_dir, log_file, process)
    try:
        _wait_until_ready(server, ready_path, timeout)
        yield server
    finally:
        stop_process_group(process)


@pytest.fixture(scope="session")
def pushgateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of Debian's Pushgateway, empty at session start; tests share it, so each uses its own job names."""

    def args(address: str, data_dir: Path) -> list[str]:
        return [
            f"--web.listen-address={address}",
            # Empty: keep pushes in memory only. The default file would bring back pushes from earlier runs.
            "--persistence.file=",
            "--log.level=warn",
        ]

    with start_debian_server(tmp_path_factory, PUSHGATEWAY_BINARY, args, package="prometheus-pushgateway") as server:
        yield server.url
