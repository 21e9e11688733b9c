"""The sending side of the benchmark: the message format and the send loop.

:func:`send_messages` runs in a thread of the harness or, by default, in a
process of its own started by the harness as ``python -m benchmarks.sender``
(a plain subprocess, not ``multiprocessing``, so that the harness works the
same from a script, a notebook or a REPL).  The harness passes it the
connected sockets of the sending members (inherited descriptors on POSIX,
``socket.share()`` on Windows) and a JSON line of parameters on stdin; it
prepares every write, answers ``ready``, waits for the start time, sends,
and prints one JSON line of progress when done or stopped (SIGTERM).

A message is ``#S.Q.TTTTTTTTTTTT `` + ``x`` padding + ``=S.Q`` (ASCII,
``size`` bytes in all unless the numbers alone are longer): sender number
``S``, sequence number ``Q``, send time ``T`` as 12 digits of
``time.perf_counter_ns()`` relative to the run's base.  The tail repeats
``S.Q`` so that a line glued from pieces of two messages is recognised as
corrupt.  ``#`` occurs exactly once per message and never in chat notices,
so counting ``#`` bytes counts messages.

The writes of an unpaced run are prepared before the start as the pieces
around their time stamps, so sending costs one clock reading and one
``bytes.join`` per write: the sender is not what limits an unpaced run.  All messages of one write
carry the same time, taken just before the write.
"""

import base64
import json
import os
import signal
import socket
import sys
import time

# progress slots
SENT, FIRST_NS, LAST_NS, DONE, CPU_US = range(5)

STAMP_DIGITS = 12
"""Digits of the send time in ns: room for 1000 s, fixed so that the padding
of every message can be prepared before the time is known."""

STAMP_FORMAT = b"%%0%dd" % STAMP_DIGITS

PREPARE_LIMIT = 500_000
"""Most messages whose writes are prepared before an unpaced start (about
100 bytes of memory each); a larger or paced run prepares each write just
before sending it (about 1 µs more per message, same bytes)."""


def make_message(sender, seq, t_ns, size):
    """One message as bytes, without a line ending (see the module docstring)."""
    head, tail = _message_parts(sender, seq, size)
    return head + STAMP_FORMAT % t_ns + tail


def _message_parts(sender, seq, size):
    """``(head, tail)`` of a message: it is ``head + STAMP + tail``."""
    head = b"#%d.%d." % (sender, seq)
    end = b"=%d.%d" % (sender, seq)
    fill = size - len(head) - STAMP_DIGITS - 1 - len(end)
    return head, b" " + b"x" * max(fill, 0) + end


def plan_writes(ids, messages, size, transport, batch):
    """Yield ``(j, count, pieces)`` for every write, in sending order.

    The bytes of the write on socket ``j`` are ``stamp.join(pieces)``: they
    hold ``count`` messages of sender ``ids[j]``.  Senders take turns;
    ``batch`` messages per write over TCP, one datagram each over UDP.
    """
    ending = b"\n" if transport == "tcp" else b""
    batch = max(1, int(batch)) if transport == "tcp" else 1
    for first in range(0, messages, batch):
        last = min(first + batch, messages)
        for j, sender in enumerate(ids):
            pieces = []
            glue = b""
            for seq in range(first, last):
                head, tail = _message_parts(sender, seq, size)
                pieces.append(glue + head)
                glue = tail + ending
            pieces.append(glue)
            yield j, last - first, pieces


def send_messages(socks, ids, messages, size, rate, transport, base_ns, start_ns, progress,
                  batch=1, plan=None):
    """Send ``messages`` messages on every socket, the senders taking turns.

    ``ids[j]``: sender number written into the messages of ``socks[j]``;
    ``rate``: messages/s per sender (0: as fast as it goes; else sender ``j``
    sends message ``q`` at ``start_ns + (q + j/len(socks)) / rate``, one
    message per write); ``transport``: ``"tcp"`` (lines with ``\\n``,
    ``sendall``) or ``"udp"`` (one datagram each); ``start_ns``: when to
    begin (``perf_counter_ns``); times in the messages are relative to
    ``base_ns``.  ``batch``: TCP and unpaced only, messages per write
    (1: one write per message, like a chat client).  ``plan``: the writes
    from :func:`plan_writes`, if prepared already.  ``progress`` (a list of
    5) gets SENT, FIRST_NS, LAST_NS (relative to ``base_ns``), DONE and
    CPU_US.  Stops quietly when a socket fails (the harness shut it down).
    """
    clock = time.perf_counter_ns
    cpu0 = time.thread_time()
    sends = [sock.sendall if transport == "tcp" else sock.send for sock in socks]
    count = len(socks)
    interval = 1e9 / rate if rate > 0 else 0.0
    if plan is None:
        plan = plan_writes(ids, messages, size, transport, 1 if interval else batch)
    sent = 0
    try:
        while True:
            left = start_ns - clock()
            if left <= 0:
                break
            time.sleep(left / 1e9)
        progress[FIRST_NS] = clock() - base_ns
        for j, n, pieces in plan:
            if interval:  # one message per write: sent counts this sender's turns
                left = start_ns + int((sent // count + j / count) * interval) - clock()
                if left > 0:
                    time.sleep(left / 1e9)
            sends[j]((STAMP_FORMAT % (clock() - base_ns)).join(pieces))
            sent += n
            progress[SENT] = sent
        progress[LAST_NS] = clock() - base_ns
    except OSError:
        pass
    finally:
        progress[CPU_US] = int((time.thread_time() - cpu0) * 1e6)
        progress[DONE] = 1


def prepare(ids, messages, size, rate, transport, batch):
    """The list of writes of an unpaced run small enough to prepare, else None."""
    if rate > 0 or len(ids) * messages > PREPARE_LIMIT:
        return None
    return list(plan_writes(ids, messages, size, transport, batch))


class _Stop(BaseException):
    pass


def _stop(signum, frame):
    raise _Stop


def main():
    """Subprocess entry: parameters on stdin, ``ready``, start time, progress."""
    params = json.loads(sys.stdin.readline())
    if os.name == "nt":
        socks = [socket.fromshare(base64.b64decode(item)) for item in params["shares"]]
    else:
        socks = [socket.socket(fileno=fd) for fd in params["fds"]]
    progress = [0] * 5
    signal.signal(signal.SIGTERM, _stop)
    args = (params["ids"], params["messages"], params["size"], params["rate"],
            params["transport"], params.get("batch", 1))
    try:
        plan = prepare(*args)
        print("ready", flush=True)
        line = sys.stdin.readline()
        if line.strip():
            send_messages(socks, params["ids"], params["messages"], params["size"],
                          params["rate"], params["transport"], params["base_ns"], int(line),
                          progress, params.get("batch", 1), plan)
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(json.dumps(progress), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
