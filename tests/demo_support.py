"""Helpers for the demo's tests: which processes a run started, and whether any outlived it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psutil
import pytest


class Descendants:
    """Every process below this one, sampled in a thread while a block runs: (pid, start time) pairs, so a pid
    reused later by an unrelated process is not mistaken for a survivor."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self._before: set[tuple[int, float]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _children() -> set[tuple[int, float]]:
        found = set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.add((child.pid, child.create_time()))
        return found

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid, created in self._children() - self._before:
                self.seen.setdefault(pid, created)

    def __enter__(self) -> Descendants:
        # Processes already running (servers of session fixtures started by other tests) are not this block's.
        self._before = self._children()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def alive(self) -> list[str]:
        survivors = []
        for pid, created in self.seen.items():
            try:
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    survivors.append(f"{pid} {' '.join(process.cmdline())}")
            except psutil.NoSuchProcess:
                pass
        return survivors


@pytest.fixture
def descendants() -> Iterator[Descendants]:
    """Records every process started below the test's process while the test runs."""
    with Descendants() as watcher:
        yield watcher
