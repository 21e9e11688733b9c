"""The TCP server's per-member Outbox on its own: limits, draining, order.

An Outbox holds encoded lines (bytes) waiting for one member: receiver
threads :meth:`~tcp_chat.server.Outbox.put` lines under the server's lock,
never waiting, and the member's sender thread takes everything queued at
once.  No socket is needed to test it.
"""

import queue
import threading

import pytest

from chat_common import config
from tcp_chat.server import Outbox

TIMEOUT = 10.0


def taker(outbox):
    """Run ``take_all()`` in a thread until it returns None, as the sender
    thread does; return a queue of everything it took (None last)."""
    taken = queue.Queue()

    def run():
        while True:
            data = outbox.take_all()
            taken.put(data)
            if data is None:
                return

    threading.Thread(target=run, daemon=True).start()
    return taken


def next_item(items):
    try:
        return items.get(timeout=TIMEOUT)
    except queue.Empty:
        pytest.fail(f"take_all() returned nothing within {TIMEOUT} s")


def test_defaults_come_from_config():
    outbox = Outbox()
    assert (outbox.limit, outbox.max_bytes) == (config.SEND_QUEUE_LIMIT, config.SEND_QUEUE_BYTES)


def test_too_many_lines_overflow_and_close_the_outbox():
    outbox = Outbox(limit=3, max_bytes=1000)
    assert outbox.put(b"a\n")
    assert outbox.put(b"b\n")
    assert outbox.put(b"c\n")  # exactly the limit may wait
    assert not outbox.put(b"d\n")  # a fourth waiting line: too slow a reader
    assert outbox.take_all() is None  # closed, and what waited is dropped
    assert outbox.put(b"e\n")  # after closing, puts are ignored quietly
    assert outbox.take_all() is None


def test_a_burst_of_lines_put_at_once_counts_each_line():
    # The server may put the lines of one recv() in one call; the line limit
    # still counts lines, not calls.
    outbox = Outbox(limit=3, max_bytes=1000)
    assert outbox.put(b"a\nb\n", lines=2)
    assert outbox.take_all() == b"a\nb\n"
    assert outbox.put(b"c\nd\ne\n", lines=3)  # exactly the limit may wait
    assert outbox.take_all() == b"c\nd\ne\n"
    assert outbox.put(b"f\ng\n", lines=2)
    assert not outbox.put(b"h\ni\n", lines=2)  # four lines would wait
    assert outbox.take_all() is None


def test_too_many_bytes_overflow():
    outbox = Outbox(limit=1000, max_bytes=10)
    assert outbox.put(b"12345\n")
    assert outbox.put(b"678\n")  # exactly 10 bytes wait
    assert not outbox.put(b"x\n")
    assert outbox.take_all() is None


def test_one_line_over_the_byte_limit_overflows_an_empty_outbox():
    outbox = Outbox(limit=1000, max_bytes=10)
    assert not outbox.put(b"0123456789\n")


def test_limits_count_what_waits_not_what_was_ever_put():
    outbox = Outbox(limit=2, max_bytes=8)
    for round_ in range(5):
        assert outbox.put(b"abc\n")
        assert outbox.put(b"def\n")
        assert outbox.take_all() == b"abc\ndef\n", round_


def test_take_all_joins_everything_queued_and_close_lets_it_drain():
    outbox = Outbox(limit=10)
    outbox.put(b"one\n")
    outbox.put(b"two\n")
    outbox.put("три\n".encode())
    outbox.close()
    assert outbox.put(b"late\n")  # ignored after close
    assert outbox.take_all() == "one\ntwo\nтри\n".encode()
    assert outbox.take_all() is None


def test_take_all_waits_for_a_put():
    outbox = Outbox(limit=10)
    taken = taker(outbox)
    assert outbox.put("привет\n".encode())
    assert next_item(taken) == "привет\n".encode()
    outbox.close()
    assert next_item(taken) is None


def test_close_wakes_a_waiting_take_all():
    outbox = Outbox(limit=10)
    taken = taker(outbox)
    outbox.close()
    assert next_item(taken) is None


def test_put_never_waits_for_the_reader():
    # Nobody takes anything: puts still return at once, up to the limit.
    outbox = Outbox(limit=20_000, max_bytes=10 << 20)
    lines = [f"строка {number:05d}\n".encode() for number in range(20_000)]
    assert all(outbox.put(line) for line in lines)
    assert not outbox.put(b"one too many\n")


def test_order_kept_across_threads():
    # Several receiver threads put while the sender thread takes: every line
    # arrives exactly once, whole, and each thread's lines in the order put.
    outbox = Outbox(limit=1_000_000, max_bytes=100 << 20)
    producers, per_producer = 4, 5_000
    taken = taker(outbox)
    start = threading.Barrier(producers, timeout=TIMEOUT)
    refused = []

    def produce(i):
        start.wait()
        for j in range(per_producer):
            if not outbox.put(f"{i}:{j}\n".encode()):
                refused.append((i, j))

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    outbox.close()
    chunks = []
    while (data := next_item(taken)) is not None:
        chunks.append(data)
    assert not refused
    lines = b"".join(chunks).decode().split("\n")
    assert lines.pop() == ""  # every line ended in \n
    assert len(lines) == producers * per_producer
    for i in range(producers):
        assert [line for line in lines if line.startswith(f"{i}:")] == [
            f"{i}:{j}" for j in range(per_producer)]
