"""The shared-memory ring between the proxy and an analysis worker, and the records
that cross it."""

from __future__ import annotations

import multiprocessing
import os
import select

import pytest
from multidict import CIMultiDict

from lookout.sidecar.pipeline.channel import Ring
from lookout.sidecar.pipeline.raw_headers import RawHeaders


@pytest.fixture
def ring():
    producer, address = Ring.create(4096, 8)
    consumer = Ring.attach(address)
    yield producer, consumer
    consumer.close()
    producer.close()


def test_records_come_out_in_order_and_whole_across_the_wrap(ring) -> None:
    producer, consumer = ring
    for i in range(200):  # far more bytes than the ring holds: it wraps many times
        record = bytes([i % 256]) * (100 + 37 * (i % 50))
        assert producer.put([record[:10], record[10:]])
        assert consumer.take() == record
    assert producer.waiting == 0 and consumer.take() is None


def test_a_full_ring_refuses_in_records_and_in_bytes_and_copies_nothing(ring) -> None:
    producer, consumer = ring
    assert not producer.put([b"x" * 5000])  # larger than the whole ring
    for _ in range(8):
        assert producer.put([b"r"])
    assert not producer.put([b"r"])  # eight records is the bound
    assert [consumer.take() for _ in range(9)] == [b"r"] * 8 + [None]
    assert producer.put([b"a" * 2000]) and not producer.put([b"b" * 2500])
    assert consumer.take() == b"a" * 2000


def test_a_record_whose_consumer_died_is_lost_not_analysed_again(ring) -> None:
    producer, consumer = ring
    for name in (b"poison", b"next"):
        producer.put([name])
    assert consumer.take() == b"poison"  # claimed; the worker dies before finishing it
    assert producer.unfinished == 2
    assert consumer.abandon_claimed() == 1  # what its successor counts as lost
    assert consumer.take() == b"next"
    consumer.finish()
    assert producer.unfinished == 0 and consumer.abandon_claimed() == 0


def _consume(address, out) -> None:
    ring = Ring.attach(address)
    records = []
    while len(records) < 100:
        record = ring.take()
        if record is None:  # as a worker sleeps: say so, look again, then block
            ring.consumer_sleeps(True)
            if not ring.waiting:
                select.select([ring.wake_fd], [], [], 5)
            ring.consumer_sleeps(False)
            ring.clear_wakeups()
            continue
        records.append(record)
        ring.finish()
    out.put(sum(len(r) for r in records))
    ring.close()


def test_another_process_reads_what_the_producer_put() -> None:
    producer, address = Ring.create(64 * 1024, 1000)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=_consume, args=(address, out))
    process.start()
    sent = 0
    while sent < 100:
        if producer.put([b"z" * (sent * 100 + 1)]):
            sent += 1
    assert out.get(timeout=60) == sum(i * 100 + 1 for i in range(100))
    process.join(30)
    assert process.exitcode == 0 and producer.unfinished == 0
    producer.close()


def _pending_wakeups(consumer: Ring) -> int:
    count = 0
    while select.select([consumer.wake_fd], [], [], 0)[0]:
        count += len(os.read(consumer.wake_fd, 65536))
    return count


def test_the_producer_wakes_only_a_consumer_that_said_it_sleeps(ring) -> None:
    producer, consumer = ring
    for _ in range(3):  # awake (working, or polling): no system call for it
        assert producer.put([b"x" * 16])
    assert _pending_wakeups(consumer) == 0
    while consumer.take() is not None:
        pass
    consumer.consumer_sleeps(True)
    assert producer.put([b"y" * 16]) and producer.put([b"z" * 16])
    assert _pending_wakeups(consumer) == 2  # each put while it sleeps
    consumer.consumer_sleeps(False)
    assert producer.put([b"w" * 16])
    assert _pending_wakeups(consumer) == 0
    assert [consumer.take() for _ in range(3)] == [b"y" * 16, b"z" * 16, b"w" * 16]


def test_raw_header_blocks_read_as_case_insensitive_mappings() -> None:
    headers = RawHeaders([(b"Content-Type", b"image/jpeg"), (b"X-A", b"1"), (b"x-a", b"2")])
    assert headers["content-type"] == "image/jpeg"
    assert headers.get("X-Missing", "none") == "none"
    assert headers.getall("X-A") == ["1", "2"]
    assert len(headers) == 3 and "x-A" in headers
    assert headers == CIMultiDict([("content-type", "image/jpeg"), ("X-A", "1"), ("x-a", "2")])
    assert RawHeaders.of(CIMultiDict({"K": "v\u00e9"})).raw == [(b"K", "v\u00e9".encode())]
