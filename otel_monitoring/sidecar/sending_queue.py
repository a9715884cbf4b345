"""The sending queue every queued exporter shares: bounded, with retries, optionally kept on disk.

An exporter encodes a batch once (a remote-write ``WriteRequest``, an OTLP request body) and offers the bytes as
a :class:`Batch`; the queue's consumer threads hand each one to the exporter's ``send`` callable, retrying with
exponential backoff and jitter (``retry_on_failure``) until the backend acknowledges it, the error is permanent,
or ``max_elapsed_time`` runs out. This is the OpenTelemetry Collector's exporterhelper ``sending_queue`` and
``retry_on_failure``, reduced to what the sidecar needs.

The ``send`` callable is the whole contract with a transport: return normally when the backend acknowledged the
batch, raise :class:`RetryableError` (optionally with ``retry_after`` seconds) for what can succeed later, raise
:class:`PermanentError` for what never will. Any other exception is retried, as exporterhelper does.

- **Bounded.** ``queue_size`` batches at most, counted over all consumers. ``offer`` refuses a group of batches
  that does not fit (all or nothing). :meth:`SendingQueue.reserve` holds room for one offer before the data is
  accepted upstream, so a request that got its reservation is never refused here and one that did not is
  answered 503 with ``Retry-After``: senders keep the data instead of it being lost here.
- **Ordered where it matters.** A batch with a ``partition`` goes to that consumer, which sends its batches one
  at a time in the order offered (remote write shards by series: Prometheus refuses out-of-order samples). A
  batch without one goes to the least loaded consumer.
- **Durable with storage.** With a :class:`QueueFiles` (from the ``file_storage`` extension, :class:`FileStorage`),
  every accepted batch is written and fsync'd before ``offer`` returns True, and its file is removed only when
  the batch is acknowledged or given up. Batches found on disk at start (a crash, SIGTERM, a restart) are sent
  first, one at a time in the order they were accepted, before anything new: their partitions came from an
  earlier process, so only the global order keeps each series in time order.

>>> sent = []
>>> queue = SendingQueue(lambda batch: sent.append(batch.body), SendingQueueConfig(num_consumers=2), RetryConfig())
>>> queue.start()
>>> queue.offer([Batch(b"one", points=3), Batch(b"two", points=1)])
True
>>> queue.flush(timeout=5.0)
True
>>> queue.shutdown(timeout=1.0)
>>> sorted(sent), queue.stats().sent
([b'one', b'two'], 4)
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import importlib.metadata
import logging
import math
import os
import random
import ssl
import struct
import threading
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx

from otel_monitoring.sidecar.config import RemoteWriteQueueConfig, RetryConfig, SendingQueueConfig, TLSClientConfig

__all__ = [
    "Batch",
    "FileStorage",
    "PermanentError",
    "QueueFiles",
    "QueueStats",
    "QueuedExporter",
    "QueuedExporterStats",
    "RetryableError",
    "SendingQueue",
    "StorageError",
    "make_http_client",
    "retry_after_seconds",
    "user_agent",
]

_logger = logging.getLogger(__name__)


# --- What travels ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """One encoded request: the bytes sent as they are, its data points (for the counts), the consumer that must
    send it (``None``: any) and a ``tag`` saying how ``body`` is encoded, kept on disk with it so that a restart
    with a changed config still sends old batches with the right headers.

    >>> Batch(b"\\x00", points=2, partition=1, tag="proto+gzip").points
    2
    """

    body: bytes
    points: int
    partition: int | None = None
    tag: str = ""


class PermanentError(Exception):
    """The backend will never take this batch (HTTP 4xx other than 429, a malformed request): dropped, counted.

    ``key`` groups messages so that each kind is logged at warning level once, then at debug level.
    """

    def __init__(self, message: str, *, key: str = "permanent") -> None:
        super().__init__(message)
        self.key = key


class RetryableError(Exception):
    """Sending failed in a way that can succeed later (network, 429, 502-504); ``retry_after`` in seconds, if the
    backend said when."""

    def __init__(self, message: str, *, retry_after: float | None = None, key: str = "retryable") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.key = key


Sender = Callable[[Batch], object]
"""Sends one batch; returns when the backend acknowledged it, raises :class:`RetryableError` or
:class:`PermanentError` otherwise."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts in data points unless named ``*_batches``; for the sidecar's own metrics.

    ``sent``: acknowledged by the backend. ``failed``: given up (a permanent error, retries exhausted, or, without
    storage, still failing when shutdown's time ran out). ``dropped``: refused by an offer because the queue was
    full or closed (the Collector's ``enqueue_failed``: a pipeline may offer them again), or (without storage)
    still queued at shutdown. ``queued``/``queued_batches``: waiting now, the batch
    being sent included. ``capacity``: ``queue_size``. ``retries``: attempts repeated. ``restored_batches``: found
    on disk at start. ``kept_batches``: left on disk at shutdown for the next start.
    """

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    queued_batches: int = 0
    capacity: int = 0
    retries: int = 0
    restored_batches: int = 0
    kept_batches: int = 0


# --- Files -------------------------------------------------------------------------------------------------------


class StorageError(OSError):
    """The ``file_storage`` directory cannot be used (missing, not writable, locked by another sidecar)."""


# One file per batch: <seq>.batch = header, tag, body. The header's CRC covers tag and body, so a torn or damaged
# file is recognised; files are written as <seq>.tmp and renamed, so a crash mid-write leaves only a .tmp.
_MAGIC: Final = b"OMQB"
_VERSION: Final = 1
_HEADER: Final = struct.Struct("<4sHHiIII")  # magic, version, tag length, partition (-1: any), points, body, crc
_SUFFIX: Final = ".batch"
_LOCK_NAME: Final = ".lock"


class FileStorage:
    """The ``file_storage`` extension: one directory, used by one sidecar at a time, one subdirectory per queue.

    :meth:`open` creates the directory (with ``create_directory``) and takes ``<directory>/.lock`` with ``flock``,
    waiting up to ``timeout`` seconds: a second sidecar on the same directory fails with :class:`StorageError`
    instead of sending (and deleting) the first one's batches. A crashed holder's lock goes with its process.
    ``fsync=False`` skips the fsyncs (tests on tmpfs, benchmarks); the sidecar always fsyncs.

    >>> import tempfile
    >>> storage = FileStorage(tempfile.mkdtemp(), timeout=0.0)
    >>> storage.open()
    >>> storage.queue_files("otlphttp/gateway").path.name
    'otlphttp%2Fgateway'
    >>> storage.close()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        create_directory: bool = False,
        timeout: float = 1.0,
        fsync: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.directory = Path(directory)
        self._create = create_directory
        self._timeout = timeout
        self._fsync = fsync
        self._clock = clock
        self._sleep = sleep
        self._lock_fd: int | None = None
        self._queues: dict[str, QueueFiles] = {}

    def open(self) -> None:
        """Create or check the directory and take its lock; :class:`StorageError` says why not. Idempotent."""
        if self._lock_fd is not None:
            return
        if not self.directory.is_dir():
            if not self._create:
                raise StorageError(f"directory {self.directory} does not exist (or set create_directory: true)")
            try:
                self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
            except OSError as error:
                raise StorageError(f"cannot create directory {self.directory}: {error.strerror}") from None
        lock_path = self.directory / _LOCK_NAME
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as error:
            raise StorageError(f"cannot write in {self.directory}: {error.strerror}") from None
        deadline = self._clock() + self._timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if self._clock() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise StorageError(
                        f"directory {self.directory} is in use by another sidecar (pid {holder} holds {lock_path}); "
                        "give each sidecar its own directory"
                    ) from None
                self._sleep(min(0.05, self._timeout))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def queue_files(self, queue_id: str) -> QueueFiles:
        """The files of one queue (one exporter id), in a subdirectory named after it (percent-encoded)."""
        if queue_id not in self._queues:
            path = self.directory / urllib.parse.quote(queue_id, safe="")
            self._queues[queue_id] = QueueFiles(path, fsync=self._fsync, is_open=lambda: self._lock_fd is not None)
        return self._queues[queue_id]

    def close(self) -> None:
        """Release the lock; the files stay. Idempotent."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


class QueueFiles:
    """One queue's batches on disk: ``<sequence>.batch`` files, read back in sequence order."""

    def __init__(self, path: Path, *, fsync: bool = True, is_open: Callable[[], bool] = lambda: True) -> None:
        self.path = path
        self._fsync = fsync
        self._is_open = is_open

    def _check_open(self) -> None:
        if not self._is_open():
            raise StorageError(f"{self.path}: the file_storage extension is not open")

    def load(self) -> list[tuple[int, Batch]]:
        """Every readable batch with its sequence number, oldest first. Unreadable files are renamed
        ``*.corrupt`` with a warning naming them; half-written ``*.tmp`` files (never accepted) are removed."""
        self._check_open()
        try:
            self.path.mkdir(mode=0o750, exist_ok=True)
            names = os.listdir(self.path)
        except OSError as error:
            raise StorageError(f"cannot read {self.path}: {error.strerror}") from None
        found: list[tuple[int, Batch]] = []
        for name in names:
            file = self.path / name
            stem, _, suffix = name.partition(".")
            if suffix == "tmp":
                # Written by an offer that never returned True: nobody was told it was kept.
                _remove_quietly(file)
                continue
            if "." + suffix != _SUFFIX or not stem.isdigit():
                continue
            try:
                batch = _read_batch(file.read_bytes())
            except (OSError, ValueError) as error:
                _logger.warning("file_storage: skipping unreadable queue file %s (%s); renamed *.corrupt", file, error)
                with contextlib.suppress(OSError):
                    os.replace(file, file.with_name(name + ".corrupt"))
                continue
            found.append((int(stem), batch))
        found.sort(key=lambda item: item[0])
        return found

    def write(self, items: Sequence[tuple[int, Batch]]) -> None:
        """Write batches durably: each file fsync'd and renamed into place, then the directory fsync'd once."""
        self._check_open()
        self.path.mkdir(mode=0o750, exist_ok=True)
        written: list[Path] = []
        try:
            for seq, batch in items:
                final = self.path / f"{seq:020d}{_SUFFIX}"
                temporary = final.with_suffix(".tmp")
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
                try:
                    os.write(fd, _encode_batch(batch))
                    if self._fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temporary, final)
                written.append(final)
            if self._fsync:
                # The renames are durable only once the directory entry is.
                dir_fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError:
            for file in written:
                _remove_quietly(file)
            raise

    def remove(self, seq: int) -> None:
        """Forget a batch (acknowledged or given up). Not fsync'd: a removal lost in a crash sends the batch again,
        which remote write and OTLP take as a duplicate of the same sample."""
        _remove_quietly(self.path / f"{seq:020d}{_SUFFIX}")


def _encode_batch(batch: Batch) -> bytes:
    tag = batch.tag.encode()
    crc = zlib.crc32(batch.body, zlib.crc32(tag))
    partition = -1 if batch.partition is None else batch.partition
    header = _HEADER.pack(_MAGIC, _VERSION, len(tag), partition, batch.points, len(batch.body), crc)
    return header + tag + batch.body


def _read_batch(data: bytes) -> Batch:
    if len(data) < _HEADER.size:
        raise ValueError(f"truncated: {len(data)} bytes, shorter than the header")
    magic, version, tag_length, partition, points, body_length, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise ValueError("not a queue file of this version")
    if len(data) != _HEADER.size + tag_length + body_length:
        raise ValueError(f"truncated or padded: {len(data)} bytes, expected {_HEADER.size + tag_length + body_length}")
    tag = data[_HEADER.size : _HEADER.size + tag_length]
    body = data[_HEADER.size + tag_length :]
    if zlib.crc32(body, zlib.crc32(tag)) != crc:
        raise ValueError("checksum mismatch")
    return Batch(body, points, None if partition < 0 else partition, tag.decode())


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        _logger.warning("file_storage: cannot remove %s: %s", path, error.strerror)


# --- The queue ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    batch: Batch
    seq: int  # on disk as <seq>.batch when the queue has storage


_SENT: Final = "sent"
_FAILED: Final = "failed"
_ABORTED: Final = "aborted"  # shutdown's time ran out while retrying


class SendingQueue:
    """A bounded queue of encoded batches with ``num_consumers`` sender threads and retries.

    ``config`` is a ``sending_queue`` (or ``remote_write_queue``) block: ``enabled`` (false: :meth:`offer` sends
    in the caller's thread and returns whether the backend took everything), ``num_consumers``, ``queue_size``.
    ``retry`` is ``retry_on_failure``. ``storage`` keeps the queue on disk (see the module docstring).
    ``batches_per_offer`` is the most batches one ``offer`` may bring (remote write: one per consumer), kept free
    by :meth:`busy` so that data the pipeline admitted always fits. ``clock``, ``sleep`` and ``jitter`` (uniform in
    [0, 1)) are injectable so tests need no real waiting; ``logger`` is the exporter's, so log lines name it.
    """

    def __init__(
        self,
        send: Sender,
        config: SendingQueueConfig | RemoteWriteQueueConfig,
        retry: RetryConfig,
        storage: QueueFiles | None = None,
        *,
        name: str = "exporter",
        batches_per_offer: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
        logger: logging.Logger = _logger,
    ) -> None:
        if storage is not None and not config.enabled:
            raise ValueError(f"{name}: a queue kept on disk must be enabled (storage needs enabled: true)")
        self.name = name
        self._send = send
        self._retry = retry
        self._storage = storage
        self._queued = config.enabled
        self._consumers = config.num_consumers if config.enabled else 1
        self._capacity = config.queue_size
        self._headroom = max(1, batches_per_offer)
        self._clock = clock
        self._abort = threading.Event()
        self._sleep = sleep if sleep is not None else self._abort.wait
        self._jitter = jitter
        self._logger = logger
        self._lock = threading.Condition()
        self._offer_lock = threading.Lock()  # offers in turn, so batches enter in the order their files are numbered
        self._partitions: list[deque[_Entry]] = [deque() for _ in range(self._consumers)]
        self._backlog: deque[_Entry] = deque()  # restored from disk: sent first, one at a time, in order
        self._backlog_busy = False
        self._size = 0
        self._reserved = 0  # batches held by reserve() for offers to come
        self._points = 0
        self._next_seq = 1
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closing = False
        self._closed = False
        self._deadline = math.inf
        self._counts = dict.fromkeys(("sent", "failed", "dropped", "retries", "restored_batches", "kept_batches"), 0)
        self._logged: set[str] = set()

    # --- lifecycle ---

    def start(self) -> None:
        """Load what the storage holds from an earlier run, then start the consumers. Idempotent.

        Raises :class:`StorageError` when the storage cannot be read."""
        with self._lock:
            if self._started or self._closing:
                return
            self._started = True
        if self._storage is not None:
            restored = self._storage.load()
            with self._lock:
                for seq, batch in restored:
                    self._backlog.append(_Entry(batch, seq))
                    self._size += 1
                    self._points += batch.points
                    self._next_seq = max(self._next_seq, seq + 1)
                self._counts["restored_batches"] += len(restored)
            if restored:
                self._logger.info(
                    "%s: %d batches (%d points) left by an earlier run in %s are sent first",
                    self.name,
                    len(restored),
                    sum(batch.points for _, batch in restored),
                    self._storage.path,
                )
        if not self._queued:
            return
        with self._lock:
            for partition in range(self._consumers):
                thread = threading.Thread(
                    target=self._run, args=(partition,), name=f"{self.name}-sender-{partition}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Refuse new batches, send what is queued for up to ``timeout`` seconds, then stop. Idempotent.

        Without storage what is left is counted in ``dropped`` (a batch still being retried in ``failed``); with
        storage it stays on disk for the next start (``kept_batches``)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = self._clock() + timeout
            self._lock.notify_all()
            threads = list(self._threads)
        end = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        self._abort.set()
        with self._lock:
            self._lock.notify_all()
        for thread in threads:
            thread.join(1.0)  # a request in flight ends within the exporter's timeout; not worth waiting for
        with self._lock:
            left = [entry for queue in (self._backlog, *self._partitions) for entry in queue]
            for queue in (self._backlog, *self._partitions):
                queue.clear()
            self._size = self._points = 0
            if self._storage is not None:
                self._counts["kept_batches"] += len(left)
            else:
                self._counts["dropped"] += sum(entry.batch.points for entry in left)
            self._closed = True
            self._lock.notify_all()
        if left and self._storage is not None:
            self._logger.info(
                "%s: %d batches (%d points) not sent yet are kept in %s for the next start",
                self.name,
                len(left),
                sum(entry.batch.points for entry in left),
                self._storage.path,
            )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty (everything sent or given up); False if that took more than ``timeout``."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._size:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))
        return True

    # --- the pipeline side ---

    def busy(self) -> bool:
        """True when the next offer might not fit: the pipeline then refuses data upstream (503) instead."""
        with self._lock:
            return self._queued and (self._closing or self._size + self._reserved + self._headroom > self._capacity)

    def reserve(self) -> bool:
        """Hold room for one offer (``batches_per_offer`` batches); False when there is none (or it is shut down).

        The room is the caller's until it offers with ``reserved=True`` or calls :meth:`release`: checking
        :meth:`busy` and offering later is a race that concurrent requests lose together. Without a queue there
        is nothing to hold: True unless shut down.
        """
        with self._lock:
            if self._closing:
                return False
            if not self._queued:
                return True
            if self._size + self._reserved + self._headroom > self._capacity:
                return False
            self._reserved += self._headroom
            return True

    def release(self) -> None:
        """Give back the room :meth:`reserve` held, unused."""
        with self._lock:
            if self._queued:
                self._reserved = max(0, self._reserved - self._headroom)

    def offer(self, batches: Sequence[Batch], *, reserved: bool = False) -> bool:
        """Queue ``batches`` (all or none); with storage they are on disk when this returns True.

        ``reserved``: the caller holds a :meth:`reserve` for this offer, which the offer takes over (or gives back,
        for an empty one); at most ``batches_per_offer`` batches then, and the room is there. False when they do
        not fit, the queue is shut down, or the storage cannot write; the points are counted in ``dropped``.
        Without a queue (``enabled: false``) the batches are sent now and False means one failed."""
        if reserved and (not batches or not self._queued):
            self.release()
        if not batches:
            return True
        if not self._queued:
            if self._closing:
                self._refuse(sum(batch.points for batch in batches))
                return False
            outcomes = [self._deliver(batch) for batch in batches]
            return all(outcome == _SENT for outcome in outcomes)
        points = sum(batch.points for batch in batches)
        with self._offer_lock:
            with self._lock:
                if reserved:  # the batches take the room over in the same step: nobody else can take it between
                    self._reserved = max(0, self._reserved - self._headroom)
                refused = self._closing or self._size + self._reserved + len(batches) > self._capacity
                if not refused:
                    first = self._next_seq
                    self._next_seq += len(batches)
            if refused:
                self._refuse(points)
                return False
            entries = [_Entry(batch, first + index) for index, batch in enumerate(batches)]
            if self._storage is not None:
                try:
                    self._storage.write([(entry.seq, entry.batch) for entry in entries])
                except OSError as error:
                    self._log_once(
                        "storage_write", "%s: cannot write the queue to disk (%s); data is refused", self.name, error
                    )
                    self._refuse(points, log=False)
                    return False
            with self._lock:
                if self._closing:
                    if self._storage is None:
                        self._counts["dropped"] += points
                        return False
                    # Shut down while writing: the files are on disk and the next start sends them, so the data
                    # is taken. False would make the sender retry, and the restart would then send it twice.
                    self._counts["kept_batches"] += len(entries)
                    return True
                for entry in entries:
                    self._partitions[self._partition_for(entry.batch)].append(entry)
                self._size += len(entries)
                self._points += points
                self._lock.notify_all()
        return True

    def _partition_for(self, batch: Batch) -> int:
        if batch.partition is not None:
            return batch.partition % self._consumers
        return min(range(self._consumers), key=lambda index: len(self._partitions[index]))

    def _refuse(self, points: int, *, log: bool = True) -> None:
        with self._lock:
            self._counts["dropped"] += points
        if log:
            self._log_once(
                "full",
                "%s: the sending queue is full or closed (%d batches); new data is refused and counted as dropped "
                "until the endpoint catches up",
                self.name,
                self._capacity,
            )

    def stats(self) -> QueueStats:
        """A snapshot of the counters (see :class:`QueueStats`)."""
        with self._lock:
            return QueueStats(
                queued=self._points,
                queued_batches=self._size,
                capacity=self._capacity if self._queued else 0,
                **self._counts,
            )

    # --- the consumer side ---

    def _run(self, partition: int) -> None:
        while (taken := self._take(partition)) is not None:
            queue, entry = taken
            outcome = self._deliver(entry.batch)
            self._finish(queue, entry, outcome)

    def _take(self, partition: int) -> tuple[deque[_Entry], _Entry] | None:
        own = self._partitions[partition]
        with self._lock:
            while True:
                if self._abort.is_set():
                    return None
                if self._backlog:
                    if not self._backlog_busy:
                        self._backlog_busy = True
                        return self._backlog, self._backlog[0]
                elif own:
                    # The head stays queued (and counted) until it is sent or given up: order is kept on retries.
                    return own, own[0]
                elif self._closing:
                    return None
                self._lock.wait()

    def _finish(self, queue: deque[_Entry], entry: _Entry, outcome: str) -> None:
        if self._storage is not None and outcome != _ABORTED:
            self._storage.remove(entry.seq)
        with self._lock:
            if self._closed:
                # Shutdown counted it as kept (storage) or dropped while it was in flight; it ended after all,
                # sent or given up (its file removed above), so it moves to that count. Aborted: shutdown's stands.
                if outcome != _ABORTED:
                    if self._storage is not None:
                        self._counts["kept_batches"] -= 1
                    else:
                        self._counts["dropped"] -= entry.batch.points
                    self._counts[outcome] += entry.batch.points
                return
            if queue and queue[0] is entry:
                queue.popleft()
                self._size -= 1
                self._points -= entry.batch.points
            if queue is self._backlog:
                self._backlog_busy = False
            if outcome == _SENT:
                self._counts["sent"] += entry.batch.points
            elif outcome == _FAILED or self._storage is None:
                self._counts["failed"] += entry.batch.points
            else:
                self._counts["kept_batches"] += 1
            self._lock.notify_all()

    def _deliver(self, batch: Batch) -> str:
        """Send one batch with retries: ``_SENT``, ``_FAILED`` (given up) or ``_ABORTED`` (shutdown's deadline)."""
        started = self._clock()
        interval = self._retry.initial_interval
        while True:
            retry_after: float | None = None
            try:
                self._send(batch)
                if not self._queued:
                    self._count("sent", batch.points)
                return _SENT
            except PermanentError as error:
                self._log_once(error.key, "%s: %s; not retried", self.name, error)
                if not self._queued:
                    self._count("failed", batch.points)
                return _FAILED
            except RetryableError as error:
                self._log_once(error.key, "%s: %s; retrying", self.name, error)
                retry_after = error.retry_after
            except Exception as error:  # a transport or sender error nobody classified: retried, as exporterhelper does
                self._log_once(type(error).__name__, "%s: sending failed (%r); retrying", self.name, error)
            if not self._retry.enabled:
                if not self._queued:
                    self._count("failed", batch.points)
                return _FAILED
            delay = interval * (1 + self._retry.randomization_factor * (2 * self._jitter() - 1))
            if retry_after is not None:
                delay = max(delay, retry_after)
            interval = min(interval * self._retry.multiplier, self._retry.max_interval)
            now = self._clock()
            limit = self._retry.max_elapsed_time
            with self._lock:
                deadline = self._deadline
            if limit and now + delay - started > limit:
                self._log_once("gave_up", "%s: gave up on a batch after %.1fs of retries", self.name, now - started)
                if not self._queued:
                    self._count("failed", batch.points)
                return _FAILED
            if now + delay > deadline or self._abort.is_set():
                # Shutdown's time is up: every consumer stops now rather than trying one more batch each.
                self._abort.set()
                if not self._queued:  # sent in the caller's thread: no queue keeps or counts it but this
                    self._count("failed", batch.points)
                return _ABORTED
            self._count("retries", 1)
            self._sleep(delay)

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    def _log_once(self, key: str, message: str, *args: object) -> None:
        # One line per kind of trouble: an endpoint that is down for an hour must not flood the log.
        with self._lock:
            first = key not in self._logged
            self._logged.add(key)
        self._logger.log(logging.WARNING if first else logging.DEBUG, message, *args)


# --- What every queued exporter shares ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedExporterStats:
    """An OTLP exporter's counts (``otlphttp`` and ``otlp``), in data points, for the sidecar's own metrics.

    ``sent``: in requests the backend acknowledged (``rejected`` of them it reported refusing in
    ``partial_success``). ``failed``: given up (a permanent status, retries exhausted, or without storage still
    failing when shutdown's time ran out). ``dropped``: never sent (queue full or closed; without storage, still
    queued at shutdown). ``queued``/``queued_requests``: waiting now, of ``capacity`` requests. ``retries``:
    attempts repeated. ``restored_requests``/``kept_requests``: found on disk at start / left there at shutdown.
    """

    sent: int = 0
    rejected: int = 0
    failed: int = 0
    dropped: int = 0
    queued: int = 0
    queued_requests: int = 0
    capacity: int = 0
    retries: int = 0
    restored_requests: int = 0
    kept_requests: int = 0


class QueuedExporter:
    """The part of an exporter on the sending queue that does not depend on its transport: the queue itself
    (``queue``), its lifecycle (:meth:`start`, :meth:`shutdown`, :meth:`flush`), the pipeline side (:meth:`busy`,
    :meth:`reserve`, :meth:`release`), ``stats`` and the ``partial_success`` count. A subclass encodes in
    ``export``, offers to ``self.queue`` and sends in ``send``; ``close`` frees its transport at shutdown.

    ``config_key`` (``sending_queue``, ``remote_write_queue``) names the block whose ``storage`` needs ``storage``.

    >>> sent = []
    >>> exporter = QueuedExporter(lambda batch: sent.append(batch.points), SendingQueueConfig(), RetryConfig())
    >>> exporter.start()
    >>> exporter.queue.offer([Batch(b"request", points=3)]), exporter.flush(timeout=5.0)
    (True, True)
    >>> exporter.shutdown(timeout=1.0)
    >>> sent, exporter.stats().sent
    ([3], 3)
    """

    def __init__(
        self,
        send: Sender,
        config: SendingQueueConfig | RemoteWriteQueueConfig,
        retry: RetryConfig,
        storage: QueueFiles | None = None,
        *,
        name: str = "exporter",
        config_key: str = "sending_queue",
        batches_per_offer: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
        logger: logging.Logger = _logger,
    ) -> None:
        if config.storage is not None and storage is None:
            # Failing fast beats silently keeping in memory what the operator asked to survive a restart.
            raise ValueError(
                f"exporters.{name}.{config_key}.storage: names a file_storage extension, but no storage was given "
                "(pass storage=FileStorage(...).queue_files(name), as the sidecar does)"
            )
        self.name = name
        self.queue = SendingQueue(
            send,
            config,
            retry,
            storage,
            name=name,
            batches_per_offer=batches_per_offer,
            clock=clock,
            sleep=sleep,
            jitter=jitter,
            logger=logger,
        )
        self._logger = logger
        self._partial_lock = threading.Lock()  # consumers answer in parallel
        self._rejected = 0
        self._logged_partial = False

    # --- lifecycle ---

    def start(self) -> None:
        """Send what an earlier run left on disk, then start the consumers. Idempotent."""
        self.queue.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop taking data and send what is queued for up to ``timeout`` seconds; then what is left is dropped, or
        with storage kept on disk for the next start. Idempotent."""
        self.queue.shutdown(timeout)
        self.close()

    def close(self) -> None:
        """Free the transport (after the queue stopped); a subclass's hook. Idempotent."""

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is empty; False if that took longer than ``timeout``."""
        return self.queue.flush(timeout)

    # --- the pipeline side ---

    def busy(self) -> bool:
        """True while the queue might not take the next export: the pipeline refuses upstream (503) instead."""
        return self.queue.busy()

    def reserve(self) -> bool:
        """Hold room in the queue for one export with ``reserved=True`` (see :meth:`SendingQueue.reserve`)."""
        return self.queue.reserve()

    def release(self) -> None:
        """Give back a reservation no export used."""
        self.queue.release()

    def stats(self) -> QueuedExporterStats:
        """A snapshot of the counters (see :class:`QueuedExporterStats`)."""
        queue = self.queue.stats()
        return QueuedExporterStats(
            sent=queue.sent,
            rejected=self.rejected_points,
            failed=queue.failed,
            dropped=queue.dropped,
            queued=queue.queued,
            queued_requests=queue.queued_batches,
            capacity=queue.capacity,
            retries=queue.retries,
            restored_requests=queue.restored_batches,
            kept_requests=queue.kept_batches,
        )

    @property
    def rejected_points(self) -> int:
        """Points the backend reported in ``partial_success.rejected_data_points`` (counted in ``sent`` too)."""
        with self._partial_lock:
            return self._rejected

    def count_partial_success(self, rejected: int, message: str, points: int) -> None:
        """Count what a 2xx/OK answer's ``partial_success`` says the backend refused of a request of ``points``;
        logged at warning level once (a backend that rejects a kind of point rejects it in every request)."""
        if not rejected and not message:
            return
        with self._partial_lock:
            self._rejected += rejected
            first, self._logged_partial = not self._logged_partial, True
        self._logger.log(
            logging.WARNING if first else logging.DEBUG,
            "%s: the backend rejected %d of %d data points: %s",
            self.name,
            rejected,
            points,
            message or "no reason given",
        )


# --- Helpers for HTTP senders ------------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable.

    >>> retry_after_seconds("7"), retry_after_seconds(None), retry_after_seconds("soon")
    (7.0, None, None)
    >>> retry_after_seconds("Wed, 21 Oct 2026 07:28:30 GMT", now=lambda: datetime(2026, 10, 21, 7, 28, tzinfo=UTC))
    30.0
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def make_http_client(timeout: float, tls: TLSClientConfig | None, connections: int) -> httpx.Client:
    """An ``httpx.Client`` for an exporter: its timeout, its TLS block (CA, client certificate, skip-verify) and
    one connection per consumer.

    >>> make_http_client(5.0, None, 2).timeout.read
    5.0
    """
    verify: ssl.SSLContext | bool = True
    if tls is not None:
        # One SSLContext: httpx 0.28 deprecates a CA path in ``verify`` and the ``cert`` argument.
        context = ssl.create_default_context(cafile=tls.ca_file)
        if tls.cert_file and tls.key_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        verify = context
    limits = httpx.Limits(max_connections=max(1, connections))
    return httpx.Client(timeout=timeout, verify=verify, limits=limits)


def user_agent() -> str:
    """``otel-monitoring/<version>``, the ``User-Agent`` of every exporter request."""
    try:
        version = importlib.metadata.version("otel-monitoring")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "unknown"
    return f"otel-monitoring/{version}"
