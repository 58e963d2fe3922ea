"""A one-producer, one-consumer ring of records in shared memory, between processes.

The request path hands each finished exchange to an analysis worker through one of
these: `put` copies the record's parts into the ring and returns at once, False when the
ring has no room (in records or in bytes), so the caller drops and counts. Nothing is
pickled and nothing waits. The consumer copies a record out before it frees the space,
so nothing it keeps points into memory the producer will reuse.

Positions only grow; a record is an 8-byte length and its payload, padded to 8 bytes,
and one that would run past the end starts again at 0 behind a wrap mark. The producer
writes a record before it publishes the new write position and the consumer reads the
position before the record. On x86-64 (total store order) that is ordering enough, and
it is what the tests run on. Python has no memory fence; as the nearest thing, the
producer passes through a lock (the mutex's atomic operations) between the record and
the position, and the consumer between the position and the record, for weaker-ordered
CPUs such as arm64, where the ring has not been tested.

A consumer claims a record (`taken`) when it copies it out and finishes it (`done`)
when analysed. A worker killed in between leaves `taken - done` records that nobody will
finish: its successor counts them as lost rather than analysing them again, so a record
that kills its worker cannot kill the next one.

Each ring has a wake pipe, written (never blocking: a full pipe already holds a
wake-up) only when the consumer said it sleeps (`consumer_sleeps(True)`, the `sleeping`
word) before it blocks on the pipe. A consumer that is working, or polling for a while
after its last record (`processes/analysis_worker.py`), costs the producer no system
call: under steady traffic Envoy's worker makes none for the tap, where a wake-up per
record (a write, and an interrupt to the consumer's CPU) cost it about a tenth of its
CPU per request at 1 KB. Producer and consumer each pass the fence between publishing
their own word (a position; `sleeping`) and reading the other's, and the consumer looks
at the ring once more after saying it sleeps, so one of them always sees the other (the
consumer's 1 s `select` timeout would bound a wake-up lost on a CPU weaker-ordered than
that).
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, Pipe
from typing import TypeVar

HEADER_BYTES = 64
_WRITE, _READ, _WRITTEN, _TAKEN, _DONE, _CLOSING, _SLEEPING = (8 * i for i in range(7))
_U64 = struct.Struct("<Q")
WRAP = 2**64 - 1
ALIGN = 8
T = TypeVar("T")
_FENCE = threading.Lock()


def _fence() -> None:
    with _FENCE:
        pass


def _padded(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True, slots=True)
class RingAddress:
    """What another process needs to attach: picklable for a spawned process."""

    name: str
    capacity: int
    max_records: int
    receiver: Connection  # the wake pipe's ends
    sender: Connection
    wake_path: str = ""  # a FIFO instead of a pipe: the tap, in Envoy, opens it by name


class Ring:
    """One end of a ring: `create` makes it (its owner unlinks it at `close`), `attach`
    joins it from another process as its producer or its consumer."""

    def __init__(self, memory: shared_memory.SharedMemory, address: RingAddress,
                 owner: bool) -> None:
        self._memory = memory
        self._buffer = memory.buf
        self.capacity = address.capacity
        self.max_records = address.max_records
        self._sender = address.sender
        self._receiver = address.receiver
        self.wake_path = address.wake_path
        self._owner = owner

    @classmethod
    def create(cls, capacity: int, max_records: int, wake_path: str = "",
               name: str | None = None) -> tuple[Ring, RingAddress]:
        """With `wake_path`, the wake-ups go through a FIFO made there, so a producer
        that is not our child (the tap in Envoy) can open it by name. `name`: the
        segment's (`shm_segments.SegmentOwner`), else a random one."""
        capacity = _padded(max(capacity, 4 * ALIGN))
        memory = shared_memory.SharedMemory(name=name, create=True,
                                            size=HEADER_BYTES + capacity)
        memory.buf[:HEADER_BYTES] = bytes(HEADER_BYTES)
        if wake_path:
            os.mkfifo(wake_path, 0o600)
            descriptor = os.open(wake_path, os.O_RDWR | os.O_NONBLOCK)
            receiver, sender = Connection(descriptor), Connection(os.dup(descriptor))
        else:
            receiver, sender = Pipe(duplex=False)
        os.set_blocking(sender.fileno(), False)
        os.set_blocking(receiver.fileno(), False)
        address = RingAddress(memory.name, capacity, max_records, receiver, sender,
                              wake_path)
        return cls(memory, address, owner=True), address

    @classmethod
    def attach(cls, address: RingAddress) -> Ring:
        memory = shared_memory.SharedMemory(name=address.name)
        os.set_blocking(address.sender.fileno(), False)
        os.set_blocking(address.receiver.fileno(), False)
        return cls(memory, address, owner=False)

    @property
    def name(self) -> str:
        """The segment's name as `shm_open` takes it."""
        return "/" + self._memory.name.lstrip("/")

    def reserve(self) -> None:
        """Take the memory now, so a full /dev/shm fails start-up rather than faulting a
        later write with SIGBUS. posix_fallocate gives the segment its pages without
        touching them, so they count against /dev/shm but in no process's RSS until a
        record uses them; where it is not supported, every page is touched instead."""
        path = f"/dev/shm/{self._memory.name.lstrip('/')}"
        try:
            descriptor = os.open(path, os.O_RDWR)
        except OSError:
            self.zero_fill()
            return
        try:
            os.posix_fallocate(descriptor, 0, HEADER_BYTES + self.capacity)
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            self.zero_fill()
        finally:
            os.close(descriptor)

    def zero_fill(self, chunk: int = 1024**2) -> None:
        """Touch every page now: the reservation where posix_fallocate cannot make one."""
        zeros = bytes(chunk)
        for start in range(HEADER_BYTES, HEADER_BYTES + self.capacity, chunk):
            end = min(start + chunk, HEADER_BYTES + self.capacity)
            self._buffer[start:end] = zeros[:end - start]

    def _get(self, offset: int) -> int:
        return _U64.unpack_from(self._buffer, offset)[0]

    def _set(self, offset: int, value: int) -> None:
        _U64.pack_into(self._buffer, offset, value)

    # producer side

    def put(self, parts: Sequence[bytes | bytearray | memoryview]) -> bool:
        """Copy one record made of `parts` into the ring; False, copying nothing, when
        it is full in records or bytes, or closing."""
        if self._get(_WRITTEN) - self._get(_TAKEN) >= self.max_records \
                or self._get(_CLOSING):
            return False
        size = sum(len(part) for part in parts)
        need = ALIGN + _padded(size)
        written = self._get(_WRITE)
        offset = written % self.capacity
        waste = self.capacity - offset if offset + need > self.capacity else 0
        if written - self._get(_READ) + waste + need > self.capacity:
            return False
        if waste:
            self._set(HEADER_BYTES + offset, WRAP)
            offset = 0
        start = HEADER_BYTES + offset
        self._set(start, size)
        position = start + ALIGN
        for part in parts:
            self._buffer[position:position + len(part)] = part
            position += len(part)
        _fence()
        self._set(_WRITE, written + waste + need)
        self._set(_WRITTEN, self._get(_WRITTEN) + 1)
        _fence()
        if self._get(_SLEEPING):
            self.wake()
        return True

    def wake(self) -> None:
        # a full pipe already holds a wake-up; no consumer: nothing to wake
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self._sender.fileno(), b"\0")

    def close_writing(self) -> None:
        """No more records: a consumer that finds the ring empty then stops."""
        self._set(_CLOSING, 1)
        self.wake()

    @property
    def waiting(self) -> int:
        """Records put and not yet claimed by a consumer."""
        return self._get(_WRITTEN) - self._get(_TAKEN)

    @property
    def unfinished(self) -> int:
        """Records put and not yet finished: waiting, or claimed and being analysed."""
        return self._get(_WRITTEN) - self._get(_DONE)

    # consumer side

    @property
    def closing(self) -> bool:
        return bool(self._get(_CLOSING))

    @property
    def wake_fd(self) -> int:
        return self._receiver.fileno()

    def consumer_sleeps(self, sleeping: bool) -> None:
        """Before blocking on the wake pipe (True; then look at the ring once more), and
        after (False): only a sleeping consumer is sent wake-ups."""
        self._set(_SLEEPING, int(sleeping))
        _fence()

    def clear_wakeups(self) -> None:
        try:
            while len(os.read(self._receiver.fileno(), 65536)) == 65536:
                pass
        except BlockingIOError:
            pass

    def take(self, convert: Callable[[memoryview], T] = bytes) -> T | None:
        """The next record, claimed and turned by `convert` into something that does not
        point into the ring (bytes by default), or None when the ring is empty."""
        _fence()  # this consumer's last position out before the producer's is read
        read = self._get(_READ)
        if read == self._get(_WRITE):
            return None
        _fence()
        offset = read % self.capacity
        size = self._get(HEADER_BYTES + offset)
        if size == WRAP:
            read += self.capacity - offset
            offset = 0
            size = self._get(HEADER_BYTES)
        start = HEADER_BYTES + offset + ALIGN
        try:
            with self._buffer[start:start + size] as view:
                record = convert(view)
        finally:  # a record `convert` refuses is claimed all the same, never read twice
            _fence()  # the copy is out before the space is handed back
            self._set(_TAKEN, self._get(_TAKEN) + 1)
            self._set(_READ, read + ALIGN + _padded(size))
        return record

    def finish(self, count: int = 1) -> None:
        self._set(_DONE, self._get(_DONE) + count)

    def abandon_claimed(self) -> int:
        """Records a dead consumer claimed and never finished: marked finished, and
        returned so the caller counts them as lost."""
        lost = self._get(_TAKEN) - self._get(_DONE)
        if lost:
            self.finish(lost)
        return lost

    def close(self) -> None:
        self._buffer = None
        self._memory.close()
        if self._owner:
            self._memory.unlink()
            self._sender.close()
            self._receiver.close()
            if self.wake_path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.wake_path)
