"""Traffic of a run: the senders' side (:class:`Sender`) and the receiving loop (:func:`receive`).

The first ``senders`` members send ``messages`` messages each, ``size``
bytes each, at ``rate`` messages/s each (0 = as fast as it goes: senders
take turns, and over TCP each write carries ``batch`` messages, 16 by
default, all stamped with the time of that write; with one write per message
the sender itself would be the bottleneck of an unpaced fan-out).  The format
is in :mod:`benchmarks.sender`: ``#S.Q.T`` + padding + ``=S.Q``, with the send
time ``T`` from ``time.perf_counter_ns()``.  Sending runs in a process of its
own (``sender_mode="process"``: ``python -m benchmarks.sender`` gets the
sockets) or in a thread (``"thread"``).  ``perf_counter`` is one system-wide
clock on Linux (CLOCK_MONOTONIC), Windows and macOS, so send and arrival
times agree across the two processes.

One thread of the main process receives on every fast member's socket
(senders included) with ``selectors`` and large ``recv()`` calls.  The hot
loop only stores ``(arrival time, bytes)`` and counts ``#`` bytes (one per
message, never in a notice) to know when every receiver has all it expects;
the messages are parsed by content afterwards (:mod:`benchmarks.analysis`).
It stops when every receiver has everything, or nothing new arrived for
``idle`` seconds, or at the deadline.
"""

import base64
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

from benchmarks.sender import DONE, prepare, send_messages
from benchmarks.server_process import ROOT, STOP_TIMEOUT, BenchError, child_env

RECV_BYTES = 1 << 18
"""Bytes asked of one TCP ``recv()`` by the receiving loop."""


class Sender:
    """Runs :func:`benchmarks.sender.send_messages` in a subprocess or a thread.

    ``mode="process"``: ``python -m benchmarks.sender`` gets the sockets
    (inherited descriptors; ``socket.share()`` on Windows) and its own CPU,
    so that sending does not compete with receiving for the GIL.
    ``mode="thread"``: a thread of this process.
    """

    def __init__(self, mode, socks, ids, messages, size, rate, transport, base_ns, batch=1):
        self.mode = mode
        self.socks = socks
        self.progress = [0] * 5
        self._args = (socks, ids, messages, size, rate, transport, base_ns)
        self._batch = batch
        self._worker = None
        if mode == "process":
            params = dict(ids=ids, messages=messages, size=size, rate=rate,
                          transport=transport, base_ns=base_ns, batch=batch)
            popen = dict(cwd=str(ROOT), env=child_env(), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
            if os.name != "nt":
                params["fds"] = [sock.fileno() for sock in socks]
                popen["pass_fds"] = params["fds"]
            self._worker = subprocess.Popen([sys.executable, "-m", "benchmarks.sender"], **popen)
            if os.name == "nt":
                params["shares"] = [base64.b64encode(sock.share(self._worker.pid)).decode()
                                    for sock in socks]
            try:
                self._worker.stdin.write(json.dumps(params).encode() + b"\n")
                self._worker.stdin.flush()
                ready = self._worker.stdout.readline()
            except OSError:
                ready = b""
            if ready.strip() != b"ready":
                self.stop()
                raise BenchError("процесс-отправитель не запустился")
        elif mode == "thread":
            self._plan = prepare(ids, messages, size, rate, transport, batch)
        else:
            raise ValueError(f"unknown sender_mode {mode!r}")

    def start(self, start_ns):
        """Begin sending at ``start_ns`` (``perf_counter_ns``)."""
        if self.mode == "process":
            self._worker.stdin.write(b"%d\n" % start_ns)
            self._worker.stdin.flush()
        else:
            self._worker = threading.Thread(target=send_messages, name="bench sender",
                                            args=self._args + (start_ns, self.progress,
                                                               self._batch, self._plan),
                                            daemon=True)
            self._worker.start()

    def done(self):
        """True once the sender finished (or failed)."""
        if self.mode == "process":
            return self._worker is None or self._worker.poll() is not None
        return bool(self.progress[DONE])

    def stop(self):
        """Stop sending now (a blocked send is broken off) and wait for it."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if self.mode == "process":
            if worker.poll() is None:
                worker.terminate()  # SIGTERM: it reports its progress and exits
            try:
                out, _ = worker.communicate(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                worker.kill()
                out, _ = worker.communicate()
            lines = out.decode(errors="replace").splitlines()
            try:
                self.progress = json.loads(lines[-1])
            except (IndexError, ValueError):
                pass  # killed before it could say: progress unknown
        else:
            if worker.is_alive():
                for sock in self.socks:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked sendall
                    except OSError:
                        pass
            worker.join(STOP_TIMEOUT)


def receive(socks, expected, transport, deadline_ns, idle_ns, sender_done):
    """Receive until every member has ``expected[i]`` messages, idle or deadline.

    Returns ``(chunks, info)``: ``chunks[i]`` is a list of ``(arrival_ns,
    bytes)`` of member ``i``; ``info`` has ``stop_reason``, ``stalled`` and
    ``disconnected``.  Counting uses the ``#`` bytes only (one per message).
    """
    clock = time.perf_counter_ns
    chunks = [[] for _ in socks]
    need = list(expected)
    remaining = sum(1 for count in need if count > 0)
    sel = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sel.register(sock, selectors.EVENT_READ, i)
    dontwait = getattr(socket, "MSG_DONTWAIT", 0)
    burst = 64 if dontwait else 1  # datagrams read per readiness event
    tcp = transport == "tcp"
    disconnected = 0
    last = clock()
    reason = "complete"
    stalled = False
    select = sel.select
    try:
        while remaining > 0:
            for key, _ in select(0.05):
                i = key.data
                sock = key.fileobj
                got = 0
                for _ in range(1 if tcp else burst):
                    try:
                        data = sock.recv(RECV_BYTES) if tcp else sock.recv(65535, dontwait)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        data = b""
                    if not data:
                        if tcp or got == 0:
                            sel.unregister(sock)
                            disconnected += 1
                            if need[i] > 0:
                                need[i] = 0
                                remaining -= 1
                        break
                    now = clock()
                    chunks[i].append((now, data))
                    count = data.count(b"#")
                    if count:
                        got += count
                        last = now
                if got and need[i] > 0:
                    need[i] -= got
                    if need[i] <= 0:
                        remaining -= 1
            now = clock()
            if remaining <= 0:
                break
            if now >= deadline_ns:
                reason = "deadline"
                break
            if now - last >= idle_ns:
                reason = "idle"
                stalled = not sender_done()
                break
    finally:
        sel.close()
    return chunks, {"stop_reason": reason, "stalled": stalled, "disconnected": disconnected}
