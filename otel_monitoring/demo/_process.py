"""Child processes of the demo: each in its own process group, its output in a log file, stopped by group.

A process group per child means a terminal's Ctrl-C reaches only the demo, which then stops its children in
order (the service first, so its last export reaches the sidecar), and that stopping a child also stops anything
it started (uvicorn's reloader, a shell wrapper).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

__all__ = ["ChildProcess", "DemoError"]


class DemoError(RuntimeError):
    """Something the demo needs could not start; the message says what and shows the end of its log."""


class ChildProcess:
    """A program started with :meth:`start`; :meth:`stop` ends its whole process group."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
        self.name = name
        self.process = process
        self.log_file = log_file

    @classmethod
    def start(
        cls, name: str, argv: Sequence[str], log_file: Path, *, env: Mapping[str, str] | None = None, cwd: Path
    ) -> ChildProcess:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("wb") as log:
            # Output to a file: a pipe nobody reads blocks the child once full.
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(name, process, log_file)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, limit: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-limit:] if self.log_file.exists() else ""

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        """Wait until ``url`` answers 200; raise :class:`DemoError` with the log if the child exits or is late."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise DemoError(f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"{self.name} did not answer {url} within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def terminate(self) -> None:
        """SIGTERM the group (no wait); see :meth:`wait`."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for the exit after :meth:`terminate`; SIGKILL the group if it takes longer than ``timeout``."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # The leader is gone; anything it started in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> None:
        self.terminate()
        self.wait(timeout)
