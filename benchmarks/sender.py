"""The sending side of the benchmark: the message format and the send loop.

:func:`send_messages` runs in a thread of the harness or, by default, in a
process of its own started by the harness as ``python -m benchmarks.sender``
(a plain subprocess, not ``multiprocessing``, so that the harness works the
same from a script, a notebook or a REPL).  The harness passes it the
connected sockets of the sending members (inherited descriptors on POSIX,
``socket.share()`` on Windows) and a JSON line of parameters on stdin; it
answers ``ready``, waits for the start time, sends, and prints one JSON line
of progress when done or stopped (SIGTERM).

A message is ``#S.Q.T `` + ``x`` padding + ``=S.Q`` (ASCII, ``size`` bytes
in all unless the numbers alone are longer): sender number ``S``, sequence
number ``Q``, send time ``T`` in ``time.perf_counter_ns()`` relative to the
run's base.  The tail repeats ``S.Q`` so that a line glued from pieces of
two messages is recognised as corrupt.  ``#`` occurs exactly once per
message and never in chat notices, so counting ``#`` bytes counts messages.
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


def make_message(sender, seq, t_ns, size):
    """One message as bytes, without a line ending (see the module docstring)."""
    head = b"#%d.%d.%d " % (sender, seq, t_ns)
    tail = b"=%d.%d" % (sender, seq)
    return head + b"x" * max(size - len(head) - len(tail), 0) + tail


def send_messages(socks, ids, messages, size, rate, transport, base_ns, start_ns, progress,
                  batch=1):
    """Send ``messages`` messages on every socket, the senders taking turns.

    ``ids[j]``: sender number written into the messages of ``socks[j]``;
    ``rate``: messages/s per sender (0: as fast as it goes; else sender ``j``
    sends message ``q`` at ``start_ns + (q + j/len(socks)) / rate``);
    ``transport``: ``"tcp"`` (lines with ``\\n``, ``sendall``) or ``"udp"``
    (one datagram each); ``start_ns``: when to begin (``perf_counter_ns``);
    times in the messages are relative to ``base_ns``.  ``batch``: TCP and
    unpaced only, messages joined into one ``sendall`` (each still stamped
    when it is made); 1 means one write per message, like a chat client.
    ``progress`` (a list of 5) gets SENT, FIRST_NS, LAST_NS (relative to
    ``base_ns``), DONE and CPU_US.  Stops quietly when a socket fails (the
    harness shut it down).
    """
    clock = time.perf_counter_ns
    cpu0 = time.thread_time()
    tcp = transport == "tcp"
    ending = b"\n" if tcp else b""
    sends = [sock.sendall if tcp else sock.send for sock in socks]
    pad = b"x" * size
    count = len(socks)
    interval = 1e9 / rate if rate > 0 else 0.0
    batch = max(1, int(batch)) if tcp and not interval else 1
    sent = 0
    try:
        while True:
            left = start_ns - clock()
            if left <= 0:
                break
            time.sleep(left / 1e9)
        progress[FIRST_NS] = clock() - base_ns
        for first in range(0, messages, batch):
            last = min(first + batch, messages)
            for j in range(count):
                sender = ids[j]
                if interval:
                    left = start_ns + int((first + j / count) * interval) - clock()
                    if left > 0:
                        time.sleep(left / 1e9)
                lines = []
                for seq in range(first, last):
                    head = b"#%d.%d.%d " % (sender, seq, clock() - base_ns)
                    tail = b"=%d.%d" % (sender, seq)
                    fill = size - len(head) - len(tail)
                    lines.append(head + pad[:fill] + tail + ending if fill > 0
                                 else head + tail + ending)
                sends[j](b"".join(lines) if len(lines) > 1 else lines[0])
                sent += last - first
                progress[SENT] = sent
        progress[LAST_NS] = clock() - base_ns
    except OSError:
        pass
    finally:
        progress[CPU_US] = int((time.thread_time() - cpu0) * 1e6)
        progress[DONE] = 1


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
    try:
        print("ready", flush=True)
        line = sys.stdin.readline()
        if line.strip():
            send_messages(socks, params["ids"], params["messages"], params["size"],
                          params["rate"], params["transport"], params["base_ns"],
                          int(line), progress, params.get("batch", 1))
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(json.dumps(progress), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
