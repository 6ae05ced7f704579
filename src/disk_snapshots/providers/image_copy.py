"""Copy a disk image onto other storage: sparse-aware, checksummed while it is copied, and
verified by reading the copy back from that storage.

What the loopback backup tier (loopback_backups.py) writes a backup with. Only the
image's data is read (``SEEK_DATA``/``SEEK_HOLE``) and only blocks that are not all
zeros are written, so the copy is as sparse as ``cp --sparse=always`` makes it and the
time follows the data, not the disk's size. Three threads overlap the work, at a lower
CPU priority than the service's: a reader reads and hashes, a writer writes and
flushes (``fdatasync`` every ``FLUSH_BYTES``), and a verifier drops each flushed range
from the page cache, reads it back and compares it with what was written, so a block
the storage did not keep is found before the copy is called done.

The checksum (``CHECKSUM``): for every 1 MiB block of the image, in order, that is not
all zeros, its offset (8 bytes, big-endian) followed by the sha256 of the block; the
checksum is the sha256 of that sequence. It depends on the content alone, not on where
a filesystem keeps holes, so a sparse copy and its source agree.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from disk_snapshots.providers.base import ProviderError

CHUNK = 1 << 20
CHECKSUM = "sha256-1MiB"
FLUSH_BYTES = 16 << 20
BUFFERS = 64  # 64 MiB: the blocks written but not yet read back hold theirs
NICE = 19  # the copy's threads: behind everything else (the deadline, not the CPU, bounds it)
_ZERO = bytes(CHUNK)
_WAIT = 0.5  # seconds between looks at whether a helper thread failed


@dataclass(frozen=True)
class Copied:
    size: int  # the image's logical size
    data_bytes: int  # what was written: the blocks that are not all zeros
    checksum: str
    seconds: float  # the whole copy, verification included
    flushed_seconds: float  # until the last block was written and flushed


def data_blocks(fd: int, size: int) -> Iterator[int]:
    """The offset of every CHUNK-aligned block that holds data, each once, in order."""
    done = offset = 0
    while offset < size:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # nothing but a hole after offset
                return
            raise
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), size)
        position = max(done, data - data % CHUNK)
        while position < hole:
            yield position
            position += CHUNK
        done = max(done, position)
        offset = hole


def _read(fd: int, buffer: bytearray, position: int, size: int) -> memoryview:
    length = min(CHUNK, size - position)
    view = memoryview(buffer)[:length]
    got = os.preadv(fd, [view], position)
    if got != length:
        raise ProviderError(f"short read at offset {position}: {got} of {length} bytes")
    return view


def _is_zero(buffer: bytearray, length: int) -> bool:
    # bytearray == bytes compares with memcmp; a memoryview comparison goes byte by byte.
    return buffer == _ZERO if length == CHUNK else buffer[:length] == _ZERO[:length]


def _outer(digests: dict[int, bytes]) -> str:
    outer = hashlib.sha256()
    for position in sorted(digests):
        outer.update(position.to_bytes(8, "big") + digests[position])
    return f"{CHECKSUM}:{outer.hexdigest()}"


def checksum_image(path: Path) -> str:
    """The image's checksum, computed from its content as it is stored now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        buffer = bytearray(CHUNK)
        digests: dict[int, bytes] = {}
        for position in data_blocks(fd, size):
            view = _read(fd, buffer, position, size)
            if not _is_zero(buffer, len(view)):
                digests[position] = hashlib.sha256(view).digest()
        return _outer(digests)
    finally:
        os.close(fd)


# A block on its way: its offset, the buffer holding it, its length. The buffer goes back
# to the free ones only once the block was read back from the storage and matched.
_Block = tuple[int, bytearray, int]


@dataclass
class _Pipeline:
    """The writer and verifier threads of one copy, and what they share with the reader."""

    target: int
    reader: int  # a second descriptor of the target, for reading it back
    size: int
    free: queue.Queue[bytearray] = field(default_factory=queue.Queue)
    writes: queue.Queue[_Block | None] = field(default_factory=queue.Queue)
    checks: queue.Queue[list[_Block] | None] = field(default_factory=queue.Queue)
    digests: dict[int, bytes] = field(default_factory=dict)
    failure: BaseException | None = None
    flushed_at: float = 0.0
    written: int = 0

    def start(self, source: int, deadline: float | None) -> list[threading.Thread]:
        for _ in range(BUFFERS):
            self.free.put(bytearray(CHUNK))
        work = {
            "reader": lambda: self._read_source(source, deadline),
            "writer": self._write,
            "verifier": self._verify,
        }
        threads = [
            threading.Thread(target=self._guard(run), name=f"backup-{name}", daemon=True)
            for name, run in work.items()
        ]
        for thread in threads:
            thread.start()
        return threads

    def _guard(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            # Behind the service: hashing a disk's worth of data takes a core, and the
            # service it is a backup of must not wait for one (scripts/bench backup).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
            try:
                work()
            except BaseException as err:  # handed to the reader thread, which raises it
                self.failure = self.failure or err
                self.checks.put(None)  # let the verifier go, whoever failed

        return run

    def buffer(self) -> bytearray:
        """A free buffer; raises what a helper thread failed with instead of waiting on."""
        while True:
            if self.failure is not None:
                raise self.failure
            try:
                return self.free.get(timeout=_WAIT)
            except queue.Empty:
                continue

    def _read_source(self, source: int, deadline: float | None) -> None:
        try:
            for position in data_blocks(source, self.size):
                if deadline is not None and time.monotonic() > deadline:
                    raise ProviderError(
                        f"still copying at the deadline, {self.written / 2**20:.0f} MiB written"
                    )
                buffer = self.buffer()
                view = _read(source, buffer, position, self.size)
                if _is_zero(buffer, len(view)):
                    self.free.put(buffer)
                    continue
                self.digests[position] = hashlib.sha256(view).digest()
                self.writes.put((position, buffer, len(view)))
                self.written += len(view)
        finally:
            self.writes.put(None)

    def _write(self) -> None:
        batch: list[_Block] = []
        pending = 0
        while (block := self.writes.get()) is not None:
            position, buffer, length = block
            os.pwrite(self.target, memoryview(buffer)[:length], position)
            batch.append(block)
            pending += length
            if pending >= FLUSH_BYTES:
                os.fdatasync(self.target)
                self.checks.put(batch)
                batch, pending = [], 0
        os.fsync(self.target)
        self.flushed_at = time.monotonic()
        self.checks.put(batch)
        self.checks.put(None)

    def _verify(self) -> None:
        """Each flushed block, read back from the storage, must be the bytes written: a
        comparison with the buffer still holding them (no second hash of the data)."""
        again = bytearray(CHUNK)
        while (batch := self.checks.get()) is not None:
            if not batch or self.failure is not None:
                continue
            # Flushed pages are clean: dropping them makes the reads below come from the
            # storage, not from memory.
            first, last = batch[0][0], batch[-1][0]
            os.posix_fadvise(self.reader, first, last + CHUNK - first, os.POSIX_FADV_DONTNEED)
            for position, buffer, length in batch:
                _read(self.reader, again, position, self.size)
                same = again == buffer if length == CHUNK else again[:length] == buffer[:length]
                if not same:
                    raise ProviderError(
                        f"verification failed: the block at offset {position} reads back "
                        "differently from what was written"
                    )
                self.free.put(buffer)


def copy_image(source: Path, target: Path, deadline: float | None = None) -> Copied:
    """Copy ``source`` into ``target`` (created or truncated), flushed and verified.

    ``deadline`` (a time.monotonic() value) stops a copy that is still going then.
    """
    started = time.monotonic()
    src = os.open(source, os.O_RDONLY)
    dst = reader = -1
    try:
        size = os.fstat(src).st_size
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        reader = os.open(target, os.O_RDONLY)
        os.ftruncate(dst, size)
        pipeline = _Pipeline(dst, reader, size)
        for thread in pipeline.start(src, deadline):
            thread.join()
        if pipeline.failure is not None:
            raise pipeline.failure
        return Copied(
            size,
            pipeline.written,
            _outer(pipeline.digests),
            time.monotonic() - started,
            pipeline.flushed_at - started,
        )
    finally:
        for fd in (src, dst, reader):
            if fd >= 0:
                os.close(fd)
