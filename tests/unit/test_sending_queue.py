"""The shared sending queue: bounds, order, retries, permanent errors, and the file storage across a crash.

The sender is a Python callable (the queue is transport-agnostic; the exporters' tests use real HTTP servers).
Time is a fake clock whose sleep only advances it; files live in pytest's tmp_path.
"""

from __future__ import annotations

import doctest
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otel_monitoring.sidecar import sending_queue
from otel_monitoring.sidecar.config import RetryConfig, SendingQueueConfig
from otel_monitoring.sidecar.sending_queue import (
    Batch,
    FileStorage,
    PermanentError,
    RetryableError,
    SendingQueue,
    StorageError,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


class Backend:
    """Records what it took; ``script`` lists exceptions to raise on the next calls (None: accept)."""

    def __init__(self, script: list[Exception | None] | None = None) -> None:
        self.script = list(script or [])
        self.taken: list[Batch] = []
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, batch: Batch) -> None:
        with self.lock:
            self.calls += 1
            outcome = self.script.pop(0) if self.script else None
            if outcome is None:
                self.taken.append(batch)
        if outcome is not None:
            raise outcome

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [batch.body for batch in self.taken]


def make_queue(
    send: Callable[[Batch], object],
    fake: FakeTime,
    storage: Any = None,
    jitter: float = 0.5,
    retry: dict[str, Any] | None = None,
    **queue: Any,
) -> SendingQueue:
    return SendingQueue(
        send,
        SendingQueueConfig.model_validate(queue),
        RetryConfig.model_validate(retry or {"initial_interval": "1s", "max_interval": "4s", "multiplier": 2}),
        storage,
        name="otlphttp/test",
        clock=fake.clock,
        sleep=fake.sleep,
        jitter=lambda: jitter,
    )


def opened(directory: Path, **kwargs: Any) -> FileStorage:
    storage = FileStorage(directory, fsync=False, **kwargs)
    storage.open()
    return storage


# --- bounds -----------------------------------------------------------------------------------------------------


def test_a_full_queue_refuses_whole_offers_and_counts_their_points() -> None:
    queue = make_queue(Backend(), FakeTime(), queue_size=3, num_consumers=1)

    first = queue.offer([Batch(b"a", 1), Batch(b"b", 2)])
    too_many = queue.offer([Batch(b"c", 4), Batch(b"d", 8)])  # one would fit; all or none
    last = queue.offer([Batch(b"e", 16)])

    stats = queue.stats()
    assert (first, too_many, last) == (True, False, True)
    assert (stats.queued_batches, stats.queued, stats.dropped, stats.capacity) == (3, 19, 12, 3)
    assert not queue.offer([Batch(b"f", 32)])


def test_busy_keeps_room_for_one_whole_offer() -> None:
    queue = SendingQueue(
        Backend(), SendingQueueConfig(queue_size=4, num_consumers=2), RetryConfig(), batches_per_offer=2
    )

    seen = []
    for body in (b"a", b"b", b"c", b"d"):
        seen.append(queue.busy())
        queue.offer([Batch(body, 1)])

    assert seen == [False, False, False, True]  # 3 queued + 2 that the next offer may bring would not fit in 4


def test_a_reservation_holds_room_so_that_only_the_reserved_offer_gets_it() -> None:
    queue = make_queue(Backend(), FakeTime(), queue_size=2, num_consumers=1)

    reservations = [queue.reserve() for _ in range(3)]
    unreserved = queue.offer([Batch(b"late", 4)])  # the room is held for others
    taken = [queue.offer([Batch(b"a", 1)], reserved=True), queue.offer([Batch(b"b", 2)], reserved=True)]

    assert reservations == [True, True, False]
    assert (unreserved, taken) == (False, [True, True])
    assert (queue.stats().queued_batches, queue.stats().dropped) == (2, 4)
    assert queue.busy() and not queue.reserve()


def test_a_released_or_empty_reserved_offer_gives_the_room_back() -> None:
    queue = make_queue(Backend(), FakeTime(), queue_size=1, num_consumers=1)

    assert queue.reserve() and queue.busy()
    queue.release()
    assert queue.reserve()
    assert queue.offer([], reserved=True)  # nothing to send (a processor dropped it all)

    assert not queue.busy()
    assert queue.offer([Batch(b"a", 1)])


def test_nothing_is_sent_before_start_and_everything_after() -> None:
    backend = Backend()
    queue = make_queue(backend, FakeTime(), num_consumers=3)
    for n in range(10):
        queue.offer([Batch(str(n).encode(), 1)])
    assert backend.calls == 0

    queue.start()
    assert queue.flush(timeout=10)
    queue.shutdown()

    assert sorted(backend.bodies()) == sorted(str(n).encode() for n in range(10))
    assert queue.stats().sent == 10


# --- order ------------------------------------------------------------------------------------------------------


def test_each_partition_is_sent_in_order_even_when_its_head_is_retried() -> None:
    backend = Backend([RetryableError("down")] * 7)
    queue = make_queue(backend, FakeTime(), num_consumers=4)
    queue.start()
    for n in range(25):
        queue.offer([Batch(f"{shard}:{n}".encode(), 1, partition=shard) for shard in range(4)])

    assert queue.flush(timeout=10)
    queue.shutdown()

    per_shard: dict[str, list[int]] = {}
    for body in backend.bodies():
        shard_name, number = body.decode().split(":")
        per_shard.setdefault(shard_name, []).append(int(number))
    assert per_shard == {str(shard): list(range(25)) for shard in range(4)}
    assert queue.stats().retries == 7


# --- retries ----------------------------------------------------------------------------------------------------


def test_retries_with_exponential_backoff_capped_at_max_interval() -> None:
    fake = FakeTime()
    backend = Backend([RetryableError("503")] * 4)
    queue = make_queue(backend, fake, enabled=False)

    assert queue.offer([Batch(b"x", 5)])

    assert fake.sleeps == [1.0, 2.0, 4.0, 4.0]  # jitter 0.5 is the nominal wait
    assert (queue.stats().sent, queue.stats().retries) == (5, 4)


def test_jitter_spreads_each_wait_within_the_randomization_factor() -> None:
    low, high = FakeTime(), FakeTime()
    retry = {"initial_interval": "2s", "max_interval": "2s", "randomization_factor": 0.25}

    make_queue(Backend([RetryableError("x")]), low, jitter=0.0, retry=retry, enabled=False).offer([Batch(b"", 1)])
    make_queue(Backend([RetryableError("x")]), high, jitter=0.999999, retry=retry, enabled=False).offer([Batch(b"", 1)])

    assert low.sleeps == pytest.approx([1.5])
    assert high.sleeps == pytest.approx([2.5], rel=1e-5)


def test_retry_after_wins_over_a_shorter_backoff() -> None:
    fake = FakeTime()
    queue = make_queue(Backend([RetryableError("429", retry_after=9.0), RetryableError("503")]), fake, enabled=False)

    assert queue.offer([Batch(b"x", 1)])

    assert fake.sleeps == [9.0, 2.0]


def test_gives_up_when_the_next_wait_would_pass_max_elapsed_time() -> None:
    fake = FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "4s", "multiplier": 2, "max_elapsed_time": "10s"}
    queue = make_queue(Backend([RetryableError("503")] * 100), fake, retry=retry, enabled=False)

    assert not queue.offer([Batch(b"x", 3)])

    assert fake.sleeps == [1.0, 2.0, 4.0]  # one more 4 s wait would pass 10 s
    assert queue.stats().failed == 3


def test_unclassified_exceptions_are_retried_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "otel_monitoring.sidecar.sending_queue")
    queue = make_queue(Backend([ConnectionResetError("reset")] * 3), FakeTime(), enabled=False)

    assert queue.offer([Batch(b"x", 1)])

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "ConnectionResetError" in warnings[0] and "otlphttp/test" in warnings[0]
    assert queue.stats().retries == 3


def test_permanent_errors_are_not_retried_and_count_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    backend = Backend([PermanentError("400: bad", key="status_400"), PermanentError("400: bad", key="status_400")])
    queue = make_queue(backend, fake, num_consumers=1)
    queue.start()
    queue.offer([Batch(b"a", 2)])
    queue.offer([Batch(b"b", 3)])
    queue.offer([Batch(b"c", 4)])

    assert queue.flush(timeout=10)
    queue.shutdown()

    stats = queue.stats()
    assert (stats.failed, stats.sent, stats.retries) == (5, 4, 0)
    assert fake.sleeps == []
    assert backend.bodies() == [b"c"]
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING and "400: bad" in r.getMessage()]) == 1


# --- shutdown ---------------------------------------------------------------------------------------------------


def test_shutdown_without_storage_drops_what_it_could_not_send() -> None:
    fake = FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "1s", "max_elapsed_time": "0"}  # 0: forever
    queue = make_queue(Backend([RetryableError("down")] * 10**6), fake, retry=retry, num_consumers=1)
    queue.start()
    for n in range(3):
        queue.offer([Batch(str(n).encode(), 10)])

    queue.shutdown(timeout=5)
    queue.shutdown(timeout=5)

    stats = queue.stats()
    assert (stats.sent, stats.failed, stats.dropped, stats.queued) == (0, 10, 20, 0)
    assert not queue.offer([Batch(b"late", 1)])


class GatedBackend(Backend):
    """Holds every call until ``gate`` is set, then accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, batch: Batch) -> None:
        self.entered.set()
        self.gate.wait(10)
        super().__call__(batch)


def _join_senders(queue: SendingQueue) -> None:
    for thread in threading.enumerate():
        if thread.name.startswith(f"{queue.name}-sender-"):
            thread.join(10)


@pytest.mark.parametrize("with_storage", [False, True])
def test_a_request_in_flight_at_shutdown_that_succeeds_late_counts_as_sent(tmp_path: Path, with_storage: bool) -> None:
    storage = opened(tmp_path) if with_storage else None
    files = storage.queue_files("otlp") if storage is not None else None
    backend = GatedBackend()
    queue = make_queue(backend, FakeTime(), files, num_consumers=1)
    queue.start()
    assert queue.offer([Batch(b"slow", 10)])
    assert backend.entered.wait(10)

    queue.shutdown(timeout=0)  # the request is still in flight: counted as kept or dropped for now
    backend.gate.set()
    _join_senders(queue)

    stats = queue.stats()
    assert backend.bodies() == [b"slow"]
    assert (stats.sent, stats.dropped, stats.kept_batches, stats.failed) == (10, 0, 0, 0)
    if storage is not None:
        assert list(storage.queue_files("otlp").path.glob("*.batch")) == []  # not sent again at the next start
        storage.close()


class ShutdownWhileWriting:
    """Queue files whose write lets the sidecar shut the queue down while the files are being written."""

    def __init__(self, files: Any) -> None:
        self.files = files
        self.queue: SendingQueue | None = None
        self.path = files.path

    def write(self, items: Any) -> None:
        self.files.write(items)
        assert self.queue is not None
        self.queue.shutdown(timeout=0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.files, name)


def test_an_offer_kept_on_disk_by_a_shutdown_during_its_write_is_accepted(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    files = ShutdownWhileWriting(storage.queue_files("otlp"))
    queue = make_queue(Backend(), FakeTime(), files, num_consumers=1)
    files.queue = queue

    accepted = queue.offer([Batch(b"kept", 3)])

    assert accepted  # False would make the sender retry, and the next start would send it a second time
    assert queue.stats().kept_batches == 1
    assert [batch.body for _, batch in storage.queue_files("otlp").load()] == [b"kept"]
    storage.close()


class ShutdownOnSleep(FakeTime):
    def __init__(self) -> None:
        super().__init__()
        self.queue: SendingQueue | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        assert self.queue is not None
        self.queue.shutdown(timeout=0)


def test_without_a_queue_a_send_cut_short_by_shutdown_counts_as_failed() -> None:
    fake = ShutdownOnSleep()
    retry = {"initial_interval": "1s", "max_interval": "1s", "max_elapsed_time": "0"}
    queue = make_queue(Backend([RetryableError("down")] * 100), fake, retry=retry, enabled=False)
    fake.queue = queue

    assert not queue.offer([Batch(b"cut short", 7)])

    stats = queue.stats()
    assert (stats.failed, stats.sent, stats.dropped) == (7, 0, 0)


# --- file storage -----------------------------------------------------------------------------------------------


def test_accepted_batches_are_on_disk_before_offer_returns_and_gone_once_sent(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    files = storage.queue_files("prometheusremotewrite/mimir")
    backend = Backend()
    queue = make_queue(backend, FakeTime(), files, num_consumers=2)

    assert queue.offer([Batch(b"one", 1, partition=1, tag="proto+gzip"), Batch(b"two", 2)])

    assert files.path == tmp_path / "prometheusremotewrite%2Fmimir"
    assert len(list(files.path.glob("*.batch"))) == 2
    queue.start()
    assert queue.flush(timeout=10)
    queue.shutdown()
    storage.close()
    assert list(files.path.iterdir()) == []
    assert {(b.body, b.points, b.tag) for b in backend.taken} == {(b"one", 1, "proto+gzip"), (b"two", 2, "")}


def test_after_a_crash_a_new_queue_sends_the_old_batches_first_in_order(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    crashed = make_queue(Backend(), FakeTime(), storage.queue_files("otlphttp"), num_consumers=3)
    for n in range(12):
        assert crashed.offer([Batch(f"old-{n}".encode(), 1, partition=n % 3)])
    storage.close()  # the process died: no shutdown, the lock goes with it

    storage = opened(tmp_path)
    backend = Backend([RetryableError("still starting")] * 2)
    restarted = make_queue(backend, FakeTime(), storage.queue_files("otlphttp"), num_consumers=3)
    restarted.start()
    for n in range(6):
        assert restarted.offer([Batch(f"new-{n}".encode(), 1, partition=n % 3)])
    assert restarted.flush(timeout=10)
    restarted.shutdown()
    storage.close()

    bodies = [body.decode() for body in backend.bodies()]
    assert bodies[:12] == [f"old-{n}" for n in range(12)]
    assert sorted(bodies[12:]) == sorted(f"new-{n}" for n in range(6))
    assert (restarted.stats().restored_batches, restarted.stats().sent) == (12, 18)


def test_shutdown_with_storage_keeps_unsent_batches_on_disk(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    fake = FakeTime()
    retry = {"initial_interval": "1s", "max_interval": "1s", "max_elapsed_time": "0"}
    queue = make_queue(Backend([RetryableError("down")] * 10**6), fake, storage.queue_files("rw"), retry=retry)
    queue.start()
    for n in range(4):
        queue.offer([Batch(str(n).encode(), 1)])

    queue.shutdown(timeout=3)
    storage.close()

    stats = queue.stats()
    assert (stats.kept_batches, stats.failed, stats.dropped, stats.sent) == (4, 0, 0, 0)
    storage = opened(tmp_path)
    assert [batch.body for _, batch in storage.queue_files("rw").load()] == [b"0", b"1", b"2", b"3"]
    storage.close()


def test_permanently_refused_batches_leave_the_disk(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    files = storage.queue_files("rw")
    queue = make_queue(Backend([PermanentError("400")]), FakeTime(), files, num_consumers=1)
    queue.offer([Batch(b"refused", 1)])
    queue.offer([Batch(b"taken", 1)])

    queue.start()
    assert queue.flush(timeout=10)
    queue.shutdown()

    assert list(files.path.glob("*.batch")) == []
    storage.close()


def test_corrupt_and_truncated_files_are_skipped_with_a_warning_naming_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = opened(tmp_path)
    files = storage.queue_files("rw")
    make_queue(Backend(), FakeTime(), files).offer([Batch(b"first", 1), Batch(b"second", 1), Batch(b"third", 1)])
    _, second, third = sorted(files.path.glob("*.batch"))
    second.write_bytes(second.read_bytes()[:-3])  # torn write
    data = bytearray(third.read_bytes())
    data[-1] ^= 0xFF  # a flipped bit
    third.write_bytes(bytes(data))
    (files.path / "00000000000000000009.batch").write_bytes(b"junk")
    (files.path / "00000000000000000010.tmp").write_bytes(b"half")  # an offer that never returned
    caplog.set_level(logging.WARNING)

    backend = Backend()
    queue = make_queue(backend, FakeTime(), files)
    queue.start()
    assert queue.flush(timeout=10)
    queue.shutdown()
    storage.close()

    assert backend.bodies() == [b"first"]
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for bad in (second, third, files.path / "00000000000000000009.batch"):
        assert str(bad) in warned
        assert bad.with_name(bad.name + ".corrupt").exists()
    assert sorted(p.name for p in files.path.iterdir()) == sorted(
        p.name + ".corrupt" for p in (second, third, files.path / "00000000000000000009.batch")
    )


def test_several_exporters_share_one_directory(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    make_queue(Backend(), FakeTime(), storage.queue_files("otlphttp/a")).offer([Batch(b"a", 1)])
    make_queue(Backend(), FakeTime(), storage.queue_files("otlphttp/b")).offer([Batch(b"b", 1)])

    loaded = {qid: [b.body for _, b in storage.queue_files(qid).load()] for qid in ("otlphttp/a", "otlphttp/b")}

    assert loaded == {"otlphttp/a": [b"a"], "otlphttp/b": [b"b"]}
    storage.close()


def test_a_second_sidecar_on_the_same_directory_is_refused_until_the_first_lets_go(tmp_path: Path) -> None:
    first = opened(tmp_path)
    fake = FakeTime()
    second = FileStorage(tmp_path, fsync=False, timeout=0.2, clock=fake.clock, sleep=fake.sleep)

    with pytest.raises(StorageError, match=rf"in use by another sidecar \(pid {os.getpid()} holds"):
        second.open()
    assert sum(fake.sleeps) >= 0.2  # it waited the extension's timeout first
    first.close()
    second.open()
    second.close()


def test_missing_directory_is_an_error_unless_it_may_be_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        FileStorage(tmp_path / "queue").open()

    storage = FileStorage(tmp_path / "queue", create_directory=True)
    storage.open()
    storage.close()

    assert (tmp_path / "queue").is_dir()


def test_files_are_unusable_before_the_extension_opens(tmp_path: Path) -> None:
    files = FileStorage(tmp_path).queue_files("rw")

    with pytest.raises(StorageError, match="not open"):
        files.load()


def test_storage_needs_an_enabled_queue(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="enabled"):
        make_queue(Backend(), FakeTime(), FileStorage(tmp_path).queue_files("rw"), enabled=False)


def test_module_examples_run() -> None:
    results = doctest.testmod(sending_queue)

    assert results.attempted > 5
    assert results.failed == 0
