"""The TCP server's per-member Outbox on its own: limits, order, write-through.

A connected ``socket.socketpair()`` stands for a member's connection, so the
tests see exactly the bytes the member would read.
"""

import socket
import threading

import pytest

from tcp_chat import server as server_module
from tcp_chat.server import Outbox

TIMEOUT = 10.0


@pytest.fixture
def pair():
    """(server side, member side) of a connected stream socket pair."""
    server_side, member_side = socket.socketpair()
    member_side.settimeout(TIMEOUT)
    yield server_side, member_side
    server_side.close()
    member_side.close()


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the other side closed early"
        data += chunk
    return data


def test_too_many_lines_overflow_and_close_the_outbox(pair):
    outbox = Outbox(pair[0], limit=3, max_bytes=1000)
    assert outbox.put(b"a\nb\n", lines=2)
    assert outbox.put(b"c\n")
    assert not outbox.put(b"d\n")  # a fourth waiting line: too slow a reader
    assert outbox.take_all() is None  # closed, and what waited is dropped
    assert outbox.put(b"e\n")  # after closing, puts are ignored quietly


def test_too_many_bytes_overflow(pair):
    outbox = Outbox(pair[0], limit=1000, max_bytes=10)
    assert outbox.put(b"123456789\n")
    assert not outbox.put(b"x\n")


def test_take_all_joins_everything_queued_and_close_lets_it_drain(pair):
    outbox = Outbox(pair[0], limit=10)
    outbox.put(b"one\n")
    outbox.put(b"two\nthree\n", lines=2)
    outbox.close()
    assert outbox.take_all() == b"one\ntwo\nthree\n"
    assert outbox.take_all() is None


@pytest.mark.skipif(not server_module.CAN_WRITE_THROUGH, reason="no MSG_DONTWAIT here")
def test_write_through_sends_at_once_without_the_sender_thread(pair):
    server_side, member_side = pair
    outbox = Outbox(server_side, limit=10)
    outbox.write_through = True
    assert outbox.put("привет\n".encode())
    # No thread ever called take_all(), yet the member has the line.
    assert member_side.recv(100) == "привет\n".encode()


@pytest.mark.skipif(not server_module.CAN_WRITE_THROUGH, reason="no MSG_DONTWAIT here")
def test_write_through_never_blocks_and_keeps_the_order(pair):
    # A small socket buffer fills again and again while the member reads and
    # the sender thread drains the queue: put() must never block, and no
    # write-through may overtake bytes that are already queued.
    server_side, member_side = pair
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    member_side.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    outbox = Outbox(server_side, limit=1_000_000, max_bytes=100_000_000)
    outbox.write_through = True
    lines = [f"строка {number:06d}\n".encode() for number in range(50_000)]
    expected = b"".join(lines)
    received = []

    def sender():  # what Connection._send_loop does
        while (data := outbox.take_all()) is not None:
            server_side.sendall(data)

    def member():
        received.append(read_exactly(member_side, len(expected)))

    threads = [threading.Thread(target=sender, daemon=True),
               threading.Thread(target=member, daemon=True)]
    for thread in threads:
        thread.start()
    queued_at_some_point = False
    for line in lines:
        assert outbox.put(line)
        queued_at_some_point = queued_at_some_point or bool(outbox._chunks)
    outbox.close()
    for thread in threads:
        thread.join(TIMEOUT)
    assert received == [expected]
    assert queued_at_some_point, "the socket took everything: nothing was tested"
