"""Benchmark harness of the chat: ``python -m benchmarks.chat_bench``.

Not chat code: the harness may use ``selectors``, several processes and
whatever makes it fast, because it must never be the bottleneck it measures.

How one run goes
----------------
1. The server under test starts in its own process on a free loopback port
   (``--port 0``); its bound address is read from its start-up log line
   (``... Сервер TCP слушает 127.0.0.1:PORT``).  Variants:

   ``tcp``      ``python -m tcp_chat.server`` (``--max-clients`` raised as needed)
   ``udp``      ``python -m udp_chat.server --client-timeout 3600`` (members
                send no heartbeats, so the timeout is made long)
   ``naive``    ``python -m benchmarks.naive_server``: the classic, deliberately
                wrong lab answer (raw chunks forwarded), as the baseline
   ``ceiling``  ``python -m benchmarks.forwarder``: a trivial forwarder; the
                figures of this variant are the harness's own ceiling

2. ``clients`` members join, ``window`` handshakes at a time (a 1000-member
   join does not overflow the listen backlog of 128); those who are in read
   and drop the notices of later joins, as chat clients would.  Then
   ``slow_readers`` more members with a tiny ``SO_RCVBUF`` join and never
   read again.  ``join_s`` is the time from the first connect to the last
   welcome line.
3. The first ``senders`` members send ``messages`` messages each, ``size``
   bytes each, at ``rate`` messages/s each (0 = as fast as it goes: senders
   take turns, and over TCP each write carries ``batch`` messages, 16 by
   default, all stamped with the time of that write; with one write per
   message the sender itself would be the bottleneck of an unpaced fan-out).  The format is in
   :mod:`benchmarks.sender`: ``#S.Q.T`` + padding + ``=S.Q``, with the send
   time ``T`` from ``time.perf_counter_ns()``.  Sending runs in a process of
   its own (``sender_mode="process"``: ``python -m benchmarks.sender`` gets
   the sockets) or in a thread (``"thread"``).  ``perf_counter`` is one
   system-wide clock on Linux (CLOCK_MONOTONIC), Windows and macOS, so send
   and arrival times agree across the two processes.
4. One thread of the main process receives on every fast member's socket
   (senders included) with ``selectors`` and large ``recv()`` calls.  The hot
   loop only stores ``(arrival time, bytes)`` and counts ``#`` bytes (one per
   message, never in a notice) to know when every receiver has all it
   expects.  Messages are parsed by *content* afterwards: lines are cut at
   ``\\n`` across chunk edges, so a server that glues or splits messages
   (naive) is counted right.  A message's arrival time is the time of the
   ``recv()`` that brought its last byte.
5. The run stops when every receiver has everything, or nothing new arrived
   for ``idle_timeout`` seconds, or at ``deadline``.  The server's CPU time
   and peak RSS are read, then the server is stopped (SIGINT, or SIGTERM
   where SIGINT is ignored; kill after ``STOP_TIMEOUT`` seconds), also in a
   ``finally`` block: always.

Python API
----------
``run_benchmark(variant="tcp", *, scenario=None, clients=..., ...) -> dict``
runs once and returns a dict with the keys below (stable: notebooks rely on
them).  ``scenario`` fills in the workload of :data:`SCENARIOS`; explicit
arguments override it.  ``run_series(variants, runs, **kwargs)`` runs
variants interleaved and returns ``{"runs": [...], "summary": {...}}``.

Result keys
-----------
Workload: ``kind`` ("run"), ``variant``, ``scenario`` (str or None),
``run`` (index, from 1), ``clients``, ``senders``, ``messages``, ``size``,
``rate``, ``slow_readers``, ``sender_mode``, ``batch``, ``load_1min`` (the
machine's load average as the run began, None where unknown: other work on
the machine distorts every figure).

Outcome (ints unless noted; None when the run did not get that far):

* ``joined``: members that joined (slow readers included); ``join_s``
  (float): first connect to last welcome.
* ``sent``: messages the senders handed to the socket.
* ``expected``: deliveries planned: every fast member gets every message of
  every *other* sender; ``received``: distinct valid messages that arrived;
  ``lost`` = expected - received; ``loss_pct`` (float).
* ``duplicates``: a message arriving again at the same member;
  ``out_of_order``: a message whose sequence number is below one already
  received from the same sender by the same member; ``corrupt``: lines with a
  ``#`` that are not exactly a message as sent (glued, cut, interleaved,
  wrong ``NAME:`` prefix) -- not counted as received; ``echoes``: a sender's
  own message returned to it (not counted).
* ``order_mismatch_members``: members (with several senders) whose order of
  messages differs from that of a reference member.
* ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``,
  ``latency_max_ms`` (floats): send to arrival over all deliveries;
  ``latency_p99_worst_member_ms``: the highest per-member p99.
* ``deliveries_per_s`` (float): received / ``window_s``; ``window_s``: first
  send to last arrival; ``send_s``: first to last send.
* ``server_peak_rss_mb`` (float): peak resident memory of the server process
  (VmHWM on Linux); ``server_cpu_s``: its CPU seconds during the window
  (per-thread ns counters on Linux, else clock ticks); ``server_cpu_total_s``:
  user + system since it started (clock ticks, 10 ms resolution).
* ``harness_cpu_s``: CPU seconds of the harness during the window (receiver
  process plus sender process).
* ``members_disconnected``: fast members whose connection the server closed;
  ``slow_readers_dropped``: slow readers the server disconnected.
* ``stop_reason``: ``"complete"``, ``"idle"`` (nothing new for
  ``idle_timeout``: loss, or a stalled server), ``"deadline"`` or ``"error"``;
  ``stalled`` (bool): idle with the senders still blocked, or (TCP, which
  loses nothing) with deliveries missing: the server stopped forwarding.
  ``deliveries_per_s`` of a stalled run covers only what arrived before.
* ``server_pid``: the server's process id; ``server_exit``: how it ended
  (``"signal"``: stopped by SIGINT/SIGTERM in time, ``"killed"``, or
  ``"exited (CODE)"`` if it had ended by itself).
* ``error``: None, or text when the run failed (for example a join refused).

``run_series`` and the CLI's ``--json`` add one ``{"kind": "summary", ...}``
object with per-variant medians and the ratios of medians of
``deliveries_per_s``.

Command line: ``python -m benchmarks.chat_bench --help``; see also
``benchmarks/README.md``.
"""

import base64
import json
import math
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from chat_common import config
from chat_common import protocol
from benchmarks.sender import CPU_US, FIRST_NS, LAST_NS, SENT, DONE, prepare, send_messages

try:
    import psutil
except ImportError:  # optional: /proc is read on Linux instead
    psutil = None

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    # name: (module run with -m, transport)
    "tcp": ("tcp_chat.server", "tcp"),
    "select": ("tcp_chat.select_server", "tcp"),
    "udp": ("udp_chat.server", "udp"),
    "naive": ("benchmarks.naive_server", "tcp"),
    "ceiling": ("benchmarks.forwarder", "tcp"),
}

SCENARIOS = {
    "fanout": dict(clients=21, senders=1, messages=5000, size=64, rate=0.0),
    "many-senders": dict(clients=100, senders=10, messages=1000, size=64, rate=0.0),
    "latency": dict(clients=100, senders=5, messages=50, size=64, rate=10.0),
    "slow-reader": dict(clients=21, senders=1, messages=100_000, size=64, rate=0.0,
                        slow_readers=1),
    "scale": dict(clients=1000, senders=1, messages=1, size=64, rate=0.0, deadline=120.0),
}
"""Target workloads of the performance goals (benchmarks/README.md).  ``fanout``: 20 receivers and one sender,
unpaced; ``many-senders``: 100 members, 10 of them send; ``latency``: 100
members, 5 senders at 10 messages/s each (50/s in total); ``slow-reader``:
``fanout`` plus one member that never reads, 100 000 messages; ``scale``:
1000 members, one broadcast."""

DEFAULTS = dict(clients=10, senders=2, messages=1000, size=64, rate=0.0, slow_readers=0,
                deadline=30.0, idle_timeout=2.0, window=64, sender_mode="process",
                rcvbuf=None, batch=16)

UDP_CLIENT_TIMEOUT = 3600.0
"""``--client-timeout`` of the UDP server: members of the benchmark send no
heartbeats, so they must not be removed as silent during a run."""

UDP_RCVBUF = 4 << 20
"""SO_RCVBUF asked for UDP members (the kernel caps it at net.core.rmem_max)."""

SLOW_RCVBUF = 4096
"""SO_RCVBUF of a slow reader (set before connect)."""

RECV_BYTES = 1 << 18
"""Bytes asked of one TCP ``recv()`` by the receiving loop."""

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
UDP_JOIN_RETRY = 1.0

RESULT_KEYS = (
    "kind", "variant", "scenario", "run", "clients", "senders", "messages", "size", "rate",
    "slow_readers", "sender_mode", "batch", "load_1min", "joined", "join_s", "sent", "expected",
    "received", "lost", "loss_pct", "duplicates", "out_of_order", "corrupt", "echoes",
    "order_mismatch_members", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "latency_max_ms", "latency_p99_worst_member_ms", "deliveries_per_s", "window_s", "send_s",
    "server_peak_rss_mb", "server_cpu_s", "server_cpu_total_s", "harness_cpu_s",
    "members_disconnected", "slow_readers_dropped", "stop_reason", "stalled", "server_pid",
    "server_exit", "error",
)

_ADDRESS_RE = re.compile(r"слушает\s+(\S+):(\d+)\s*$", re.MULTILINE)


class BenchError(RuntimeError):
    """A run that cannot go on (server did not start, join refused, ...)."""


def _child_env():
    """Environment of child processes: the kit's folder first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# --- The server process -------------------------------------------------------
class ServerProcess:
    """The server under test in its own process; stderr goes to a temp file.

    ``variant``: a key of :data:`VARIANTS`; ``members``: how many will join
    (raises the TCP server's ``--max-clients`` when needed).
    """

    def __init__(self, variant, members=0):
        module, self.transport = VARIANTS[variant]
        args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
        if variant == "tcp":
            args += ["--max-clients", str(max(config.MAX_CLIENTS, members + 16))]
        elif variant == "udp":
            args += ["--client-timeout", f"{UDP_CLIENT_TIMEOUT:g}"]
        env = _child_env()
        fd, self.log_path = tempfile.mkstemp(prefix="chat_bench_", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=str(ROOT), env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        self.pid = self.proc.pid
        self.exit = None
        self._ps = psutil.Process(self.pid) if psutil else None
        try:
            self.address = self._wait_address()
        except BaseException:
            self.stop()
            raise

    def _wait_address(self):
        deadline = time.monotonic() + START_TIMEOUT
        pause = threading.Event()
        while True:
            match = _ADDRESS_RE.search(self.log_text())
            if match:
                return match.group(1).strip("[]"), int(match.group(2))
            if self.proc.poll() is not None:
                raise BenchError(f"сервер завершился при запуске (код {self.proc.returncode}): "
                                 f"{self.log_text()[-500:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"сервер не сообщил адрес за {START_TIMEOUT:g} с")
            pause.wait(0.01)  # nothing to wait on but the log file

    def log_text(self):
        """What the server wrote to stderr so far (str)."""
        try:
            with open(self.log_path, "rb") as log:
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cpu_seconds_precise(self):
        """CPU seconds of the server's live threads in ns resolution (Linux), else None.

        From ``/proc/PID/task/*/schedstat``; threads that ended are not
        counted, so it only serves for a difference over a short window.
        """
        total = 0
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                try:
                    with open(f"/proc/{self.pid}/task/{tid}/schedstat") as stat:
                        total += int(stat.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pass  # the thread just ended
        except OSError:
            return None
        return total / 1e9

    def cpu_seconds(self):
        """User + system CPU seconds of the server so far (float or None).

        Clock-tick resolution (10 ms on Linux), all threads, ended ones too.
        """
        try:
            if self._ps is not None:
                times = self._ps.cpu_times()
                return times.user + times.system
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError) + ((psutil.Error,) if psutil else ()):
            return None

    def peak_rss_mb(self):
        """Peak resident memory in MB (VmHWM on Linux; else current RSS)."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        if self._ps is not None:
            try:
                info = self._ps.memory_info()
                return getattr(info, "peak_wset", info.rss) / 2**20
            except psutil.Error:
                return None
        return None

    def stop(self):
        """Stop as Ctrl+C would, kill after STOP_TIMEOUT; idempotent.

        SIGINT; but SIGTERM if this process ignores SIGINT (a shell starts
        background jobs so, and the child inherits it: SIGINT would do
        nothing); every server here treats SIGTERM as Ctrl+C.  Windows has
        neither for a child: terminate().
        """
        if self.proc.poll() is None:
            try:
                if os.name == "nt":
                    self.proc.terminate()
                elif signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
                    self.proc.send_signal(signal.SIGTERM)
                else:
                    self.proc.send_signal(signal.SIGINT)
                self.proc.wait(STOP_TIMEOUT)
                self.exit = self.exit or "signal"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit = "killed"
        else:
            self.exit = self.exit or f"exited ({self.proc.returncode})"
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


# --- Joining --------------------------------------------------------------------
def _new_socket(transport, rcvbuf):
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
    if transport == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def join_members(transport, address, names, rcvbufs, deadline, window=64, readers=None):
    """Join every name; return ``(sockets, join_seconds)``.

    At most ``window`` handshakes are in progress at once.  The first
    ``readers`` members (default: all) go on reading (and dropping) what
    arrives until the last one joined, as chat clients would; the others
    read nothing after their welcome.  Sockets come
    back in blocking mode.  Raises :class:`BenchError` (and closes them all)
    if a join is refused or ``deadline`` (``time.monotonic()``) passes.
    """
    n = len(names)
    readers = n if readers is None else readers
    socks = []
    bufs = [b""] * n
    state = [0] * n  # 1 waiting for the prompt (TCP), 2 for the welcome, 3 joined
    asked = [0.0] * n  # UDP: when /join was sent, to resend it if lost
    welcome = protocol.WELCOME_PREFIX.encode()
    already = "уже в чате".encode()
    sel = selectors.DefaultSelector()
    started = time.perf_counter()
    active = set()
    joined = 0
    try:
        while joined < n:
            while len(active) < window and len(socks) < n:
                i = len(socks)
                sock = _new_socket(transport, rcvbufs[i])
                socks.append(sock)
                if transport == "tcp":
                    sock.setblocking(False)
                    sock.connect_ex(address)  # EINPROGRESS; the prompt says it worked
                    state[i] = 1
                else:
                    sock.connect(address)
                    sock.setblocking(False)
                    sock.send(b"/join " + names[i].encode())
                    asked[i] = time.monotonic()
                    state[i] = 2
                sel.register(sock, selectors.EVENT_READ, i)
                active.add(i)
            now = time.monotonic()
            if now >= deadline:
                raise BenchError(f"за отведённое время вошли {joined} участников из {n}")
            for key, _ in sel.select(min(0.2, deadline - now)):
                i = key.data
                sock = socks[i]
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as error:
                    raise BenchError(f"участник {names[i]} не вошёл: {error}") from None
                if not data:
                    raise BenchError(f"сервер закрыл соединение участника {names[i]} при входе: "
                                     f"{(bufs[i] + data)[-200:]!r}")
                if state[i] == 3:
                    continue  # a notice of a later join: read, as a chat client would
                if transport == "udp":
                    lines = [data.rstrip(b"\n")]
                else:
                    bufs[i] += data
                    *lines, bufs[i] = bufs[i].split(b"\n")
                for line in lines:
                    if state[i] == 1:
                        if line.startswith(protocol.ERROR_PREFIX.encode()):
                            raise BenchError(f"сервер отказал: {line.decode('utf-8', 'replace')}")
                        sock.send(names[i].encode() + b"\n")  # a few bytes: never blocks
                        state[i] = 2
                    elif state[i] == 2:
                        if not (line.startswith(welcome) or already in line):
                            raise BenchError(f"вход {names[i]} не удался: "
                                             f"{line.decode('utf-8', 'replace')}")
                        state[i] = 3
                        joined += 1
                        active.discard(i)
                        if i >= readers:
                            sel.unregister(sock)  # a slow reader: reads nothing from now on
                        bufs[i] = b""
                        break
            if transport == "udp":
                now = time.monotonic()
                for i in active:
                    if now - asked[i] > UDP_JOIN_RETRY:  # the datagram or its answer was lost
                        socks[i].send(b"/join " + names[i].encode())
                        asked[i] = now
        join_s = time.perf_counter() - started
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    finally:
        sel.close()
    for sock in socks:
        sock.setblocking(True)
    return socks, join_s


# --- Sending --------------------------------------------------------------------
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
            popen = dict(cwd=str(ROOT), env=_child_env(), stdin=subprocess.PIPE,
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


# --- Receiving ------------------------------------------------------------------
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


# --- Analysis -------------------------------------------------------------------
def percentile(sorted_values, q):
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


_MESSAGE_RE = re.compile(rb"^([^\n#]*)#(\d+)\.(\d+)\.(\d+) (x*)=(\d+)\.(\d+)$", re.MULTILINE)
"""One message line: prefix (``NAME: `` or nothing), S, Q, T, padding, S, Q."""


def analyse(chunks, own_ids, prefixes, senders, messages, size, base_ns):
    """Parse every member's chunks by content.

    ``chunks[i]``: list of ``(arrival_ns, bytes)`` of member ``i``;
    ``own_ids[i]``: the sender number of member ``i`` (or -1);
    ``prefixes[s]``: bytes expected before ``#`` in lines of sender ``s``
    (``b"NAME: "``, or ``b""`` for servers that forward raw bytes).
    Returns a dict of counts, sorted latencies (ms), per-member p99s and the
    last arrival.
    """
    total_msgs = senders * messages
    prefix_of = {str(sender).encode(): prefix for sender, prefix in enumerate(prefixes)}
    findall = _MESSAGE_RE.findall
    received = duplicates = out_of_order = corrupt = echoes = 0
    all_latencies = []
    member_p99 = []
    orders = []
    last_arrival = None
    track_order = senders > 1
    for i, member_chunks in enumerate(chunks):
        seen = bytearray(total_msgs)
        top = [-1] * senders
        latencies = []
        order = []
        own = str(own_ids[i]).encode()
        tail = b""
        for arrival, data in member_chunks:
            if tail:
                data = tail + data
            end = data.rfind(b"\n")
            if end < 0:
                tail = data
                continue
            tail = data[end + 1:]
            marks = data.count(b"#", 0, end)
            if not marks:
                continue
            base = arrival - base_ns
            valid = 0
            for prefix, s, q, t, pad, s2, q2 in findall(data, 0, end):
                need = size - 2 * (len(s) + len(q)) - len(t) - 6
                if (s != s2 or q != q2 or prefix_of.get(s) != prefix
                        or len(pad) != (need if need > 0 else 0)):
                    continue
                seq = int(q)
                if seq >= messages:
                    continue
                valid += 1
                if s == own:
                    echoes += 1
                    continue
                sender = int(s)
                key = sender * messages + seq
                if seen[key]:
                    duplicates += 1
                    continue
                seen[key] = 1
                if seq < top[sender]:
                    out_of_order += 1
                else:
                    top[sender] = seq
                latencies.append(base - int(t))
                if track_order:
                    order.append(key)
            corrupt += marks - valid
            if valid and (last_arrival is None or arrival > last_arrival):
                last_arrival = arrival
        received += len(latencies)
        if latencies:
            latencies.sort()
            member_p99.append(percentile(latencies, 99) / 1e6)
            all_latencies.extend(latencies)
        if track_order:
            orders.append((own_ids[i], order))
    all_latencies.sort()
    return {
        "received": received, "duplicates": duplicates, "out_of_order": out_of_order,
        "corrupt": corrupt, "echoes": echoes,
        "latencies": [value / 1e6 for value in all_latencies],
        "member_p99": member_p99, "last_arrival": last_arrival,
        "order_mismatch_members": _order_mismatches(orders, total_msgs) if track_order else 0,
    }


def _order_mismatches(orders, total_msgs):
    """Members whose order of messages is not the reference member's order.

    The reference is the member who got the most messages (a non-sender if
    possible); messages it lacks are ignored in the comparison.
    """
    if not orders:
        return 0
    reference = max(orders, key=lambda item: (item[0] < 0, len(item[1])))[1]
    rank = [-1] * total_msgs
    for position, key in enumerate(reference):
        rank[key] = position
    mismatches = 0
    for _, order in orders:
        previous = -1
        for key in order:
            position = rank[key]
            if position < 0:
                continue
            if position < previous:
                mismatches += 1
                break
            previous = position
    return mismatches


def _drain_check(sock, limit_s=2.0):
    """True if the server closed ``sock`` (a slow reader): read until EOF or quiet."""
    deadline = time.monotonic() + limit_s
    sock.settimeout(0.2)
    try:
        while time.monotonic() < deadline:
            if not sock.recv(1 << 20):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True  # reset: closed too
    return False


def _close_abruptly(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


# --- One run --------------------------------------------------------------------
def resolve_params(scenario=None, **given):
    """Workload parameters: DEFAULTS, then the scenario's, then ``given`` (not None)."""
    params = dict(DEFAULTS)
    if scenario is not None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        params.update(SCENARIOS[scenario])
    params.update({key: value for key, value in given.items() if value is not None})
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameters: {', '.join(sorted(unknown))}")
    return params


def run_benchmark(variant="tcp", *, scenario=None, run=1, clients=None, senders=None,
                  messages=None, size=None, rate=None, slow_readers=None, deadline=None,
                  idle_timeout=None, window=None, sender_mode=None, rcvbuf=None, batch=None):
    """Start ``variant``'s server, run one workload, stop it; return a result dict.

    See the module docstring for the parameters and the result keys.  Never
    raises for a failed run (the result has ``error``); raises ``ValueError``
    or ``TypeError`` for bad arguments.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    p = resolve_params(scenario, clients=clients, senders=senders, messages=messages, size=size,
                       rate=rate, slow_readers=slow_readers, deadline=deadline,
                       idle_timeout=idle_timeout, window=window, sender_mode=sender_mode,
                       rcvbuf=rcvbuf, batch=batch)
    if variant == "ceiling":
        p["slow_readers"] = 0  # the trivial forwarder would stall on them by design
    if not 1 <= p["senders"] <= p["clients"]:
        raise ValueError("need 1 <= senders <= clients")
    result = dict.fromkeys(RESULT_KEYS)
    result.update(kind="run", variant=variant, scenario=scenario, run=run,
                  **{key: p[key] for key in ("clients", "senders", "messages", "size", "rate",
                                             "slow_readers", "sender_mode", "batch")})
    if hasattr(os, "getloadavg"):
        result["load_1min"] = round(os.getloadavg()[0], 2)
    transport = VARIANTS[variant][1]
    total = p["clients"] + p["slow_readers"]
    started = time.monotonic()
    deadline_at = started + p["deadline"]
    server = sender = None
    socks = []
    try:
        _ensure_fd_limit(total)
        server = ServerProcess(variant, members=total)
        result["server_pid"] = server.pid
        names = [f"m{i:04d}" for i in range(total)]
        rcvbuf = p["rcvbuf"] if p["rcvbuf"] is not None else (UDP_RCVBUF if transport == "udp" else 0)
        rcvbufs = [rcvbuf] * p["clients"] + [SLOW_RCVBUF] * p["slow_readers"]
        socks, join_s = join_members(transport, server.address, names, rcvbufs,
                                      deadline_at, p["window"], readers=p["clients"])
        result["join_s"] = round(join_s, 4)
        result["joined"] = len(socks)
        fast, slow = socks[:p["clients"]], socks[p["clients"]:]
        k, m = p["senders"], p["messages"]
        expected = [k * m - (m if i < k else 0) for i in range(p["clients"])]
        result["expected"] = sum(expected)
        base_ns = time.perf_counter_ns()
        sender = Sender(p["sender_mode"], fast[:k], list(range(k)), m, p["size"], p["rate"],
                        transport, base_ns, p["batch"])
        idle = p["idle_timeout"] if p["rate"] <= 0 else max(p["idle_timeout"], 3 / p["rate"])
        cpu_start = server.cpu_seconds()
        precise_start = server.cpu_seconds_precise()
        harness_cpu0 = time.process_time()
        start_ns = time.perf_counter_ns() + 20_000_000  # the receiving loop is running by then
        sender.start(start_ns)
        deadline_ns = time.perf_counter_ns() + int(max(deadline_at - time.monotonic(), 0) * 1e9)
        chunks, info = receive(fast, expected, transport, deadline_ns, int(idle * 1e9),
                               sender.done)
        precise_end = server.cpu_seconds_precise()
        cpu_end = server.cpu_seconds()
        harness_cpu = time.process_time() - harness_cpu0
        result["server_peak_rss_mb"] = _round(server.peak_rss_mb(), 1)
        result["server_cpu_total_s"] = _round(cpu_end, 3)
        result["server_cpu_s"] = _cpu_delta(cpu_start, cpu_end, precise_start, precise_end)
        sender.stop()
        progress = list(sender.progress)
        if p["sender_mode"] == "process":
            harness_cpu += progress[CPU_US] / 1e6
        result["harness_cpu_s"] = round(harness_cpu, 3)
        result["sent"] = progress[SENT]
        first_send = progress[FIRST_NS]
        if progress[LAST_NS]:
            result["send_s"] = round((progress[LAST_NS] - first_send) / 1e9, 4)
        if slow:
            result["slow_readers_dropped"] = sum(_drain_check(sock) for sock in slow)
        _stop_server(server, slow, result)  # before the analysis: free its CPU now
        prefixes = [b"" if variant in ("naive", "ceiling") else names[s].encode() + b": "
                    for s in range(k)]
        own_ids = [i if i < k else -1 for i in range(p["clients"])]
        stats = analyse(chunks, own_ids, prefixes, k, m, p["size"], base_ns)
        del chunks
        _fill_result(result, stats, first_send, base_ns)
        result["stop_reason"] = info["stop_reason"]
        # TCP loses nothing: what is missing when arrivals stopped is stuck somewhere.
        result["stalled"] = info["stop_reason"] == "idle" and (
            info["stalled"] or (transport == "tcp" and result["lost"] > 0))
        result["members_disconnected"] = info["disconnected"]
    except BenchError as error:
        result["error"] = str(error)
        result["stop_reason"] = "error"
    finally:
        if sender is not None:
            sender.stop()
        if server is not None:
            _stop_server(server, socks[p["clients"]:], result)
        for sock in socks:
            sock.close()
    return result


def _stop_server(server, slow, result):
    """Reset the slow readers' connections, then stop the server (idempotent)."""
    for sock in slow:
        _close_abruptly(sock)
    server.stop()
    result["server_exit"] = server.exit


def _cpu_delta(start, end, precise_start, precise_end):
    """CPU seconds over the window: per-thread ns counters where they exist,
    unless the tick counters (which keep ended threads) show clearly more."""
    coarse = None if start is None or end is None else end - start
    if precise_start is None or precise_end is None:
        return _round(coarse, 3)
    precise = precise_end - precise_start
    if coarse is not None and coarse > precise + 0.02:
        return round(coarse, 3)
    return round(precise, 4)


def _ensure_fd_limit(members):
    """Raise the soft limit of open files (inherited by the server) if the
    run needs more: one socket per member here and one in the server."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    needed = members + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass  # the join will fail with a clear EMFILE error instead


def _round(value, digits):
    return None if value is None else round(value, digits)


def _fill_result(result, stats, first_send, base_ns):
    received = stats["received"]
    expected = result["expected"]
    result.update(received=received, lost=expected - received,
                  loss_pct=round(100 * (expected - received) / expected, 3) if expected else 0.0,
                  **{key: stats[key] for key in ("duplicates", "out_of_order", "corrupt",
                                                 "echoes", "order_mismatch_members")})
    latencies = stats["latencies"]
    for q, key in ((50, "latency_p50_ms"), (95, "latency_p95_ms"), (99, "latency_p99_ms")):
        result[key] = _round(percentile(latencies, q), 3)
    result["latency_max_ms"] = _round(latencies[-1] if latencies else None, 3)
    result["latency_p99_worst_member_ms"] = _round(max(stats["member_p99"], default=None), 3)
    if stats["last_arrival"] is not None:
        window = (stats["last_arrival"] - base_ns - first_send) / 1e9
        result["window_s"] = round(window, 4)
        if window > 0:
            result["deliveries_per_s"] = round(received / window, 1)


# --- Series of runs ---------------------------------------------------------------
def run_series(variants, runs=1, *, scenario=None, on_result=None, **kwargs):
    """Run each variant ``runs`` times, interleaved (tcp, naive, tcp, naive, ...).

    ``on_result(result)`` is called after every run (for printing as they
    come).  Returns ``{"runs": [result, ...], "summary": summary}``; see
    :func:`summarise`.
    """
    results = []
    for index in range(1, runs + 1):
        for variant in variants:
            result = run_benchmark(variant, scenario=scenario, run=index, **kwargs)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return {"runs": results, "summary": summarise(results, variants)}


def summarise(results, variants):
    """Medians per variant of every numeric key, and ratios of deliveries/s.

    ``ratios``: ``"A/B"`` -> median deliveries/s of A over that of B, for the
    last variant listed other than ``ceiling`` as B (the baseline), and for
    ``ceiling`` as B when it was run.  Text keys (``stop_reason``, ``error``)
    get their most common value.
    """
    medians = {}
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        medians[variant] = {"runs": len(rows)}
        for key in RESULT_KEYS:
            values = [r[key] for r in rows
                      if isinstance(r[key], (int, float)) and not isinstance(r[key], bool)]
            if values and key not in ("run",):
                medians[variant][key] = round(statistics.median(values), 4)
            elif key in ("stop_reason", "error"):
                texts = [r[key] for r in rows if r[key] is not None]
                if texts:
                    medians[variant][key] = statistics.mode(texts)
    ratios = {}
    measured = [v for v in variants if v != "ceiling"]
    bases = measured[-1:] + (["ceiling"] if "ceiling" in variants else [])
    for base in dict.fromkeys(bases):
        denominator = medians.get(base, {}).get("deliveries_per_s")
        for variant in variants:
            numerator = medians[variant].get("deliveries_per_s")
            if variant != base and numerator and denominator:
                ratios[f"{variant}/{base}"] = round(numerator / denominator, 3)
    return {"kind": "summary", "medians": medians, "ratios": ratios}


# --- Text output ------------------------------------------------------------------
ROWS = (
    ("joined", "участников вошло / joined", "d"),
    ("join_s", "вход всех, с / join time, s", ".3f"),
    ("sent", "отправлено сообщений / messages sent", "d"),
    ("expected", "доставок ожидалось / deliveries expected", "d"),
    ("received", "доставок получено / deliveries received", "d"),
    ("loss_pct", "потеряно, % / loss, %", ".2f"),
    ("duplicates", "повторов / duplicates", "d"),
    ("out_of_order", "не по порядку / out of order", "d"),
    ("corrupt", "испорченных строк / corrupt lines", "d"),
    ("echoes", "эхо отправителю / echoes", "d"),
    ("order_mismatch_members", "иной порядок у участников / order mismatches", "d"),
    ("latency_p50_ms", "задержка p50, мс / latency p50, ms", ".2f"),
    ("latency_p95_ms", "задержка p95, мс / latency p95, ms", ".2f"),
    ("latency_p99_ms", "задержка p99, мс / latency p99, ms", ".2f"),
    ("latency_max_ms", "задержка max, мс / latency max, ms", ".2f"),
    ("latency_p99_worst_member_ms", "худший p99 участника, мс / worst member p99, ms", ".2f"),
    ("deliveries_per_s", "доставок в секунду / deliveries/s", ",.0f"),
    ("window_s", "окно отправка→приход, с / window, s", ".3f"),
    ("send_s", "отправка всех сообщений, с / sending, s", ".3f"),
    ("server_peak_rss_mb", "пик RSS сервера, МБ / server peak RSS, MB", ".1f"),
    ("server_cpu_s", "ЦП сервера за окно, с / server CPU in window, s", ".3f"),
    ("harness_cpu_s", "ЦП стенда за окно, с / harness CPU in window, s", ".3f"),
    ("members_disconnected", "отключено сервером / disconnected", "d"),
    ("slow_readers_dropped", "медленных отключено / slow readers dropped", "d"),
    ("stop_reason", "причина остановки / stop reason", "s"),
)


def _cell(value, fmt):
    if value is None:
        return "—"
    if isinstance(value, bool) or fmt == "s":
        return str(value)
    if fmt == "d" and isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    try:
        return format(value, fmt).replace(",", " ")
    except (ValueError, TypeError):
        return str(value)


def format_table(columns):
    """``columns``: list of ``(title, dict)``; returns the table as text."""
    width = max(len(label) for _, label, _ in ROWS)
    cells = [[_cell(data.get(key), fmt) for key, _, fmt in ROWS] for _, data in columns]
    widths = [max(len(title), *(len(c) for c in col)) for (title, _), col in zip(columns, cells)]
    lines = [" " * width + "  " + "  ".join(t.rjust(w) for (t, _), w in zip(columns, widths))]
    for row, (_, label, _) in enumerate(ROWS):
        lines.append(label.ljust(width) + "  " + "  ".join(
            col[row].rjust(w) for col, w in zip(cells, widths)))
    return "\n".join(lines)


def describe(p, variant, scenario):
    rate = "без ограничения / unpaced" if not p["rate"] else f"{p['rate']:g} сообщ./с каждый"
    text = (f"{variant}: {p['clients']} участников, {p['senders']} отправ. × {p['messages']} "
            f"сообщ. по {p['size']} Б, темп {rate}")
    if p["slow_readers"]:
        text += f", медленных читателей: {p['slow_readers']}"
    if scenario:
        text = f"[{scenario}] " + text
    return text


# --- Command line -----------------------------------------------------------------
def build_parser():
    from chat_common.cli import make_parser  # help headings in Russian, as the chat's

    whole, parser = make_parser(  # options go into the group "параметры"
        "python -m benchmarks.chat_bench",
        "Нагрузочный стенд чата: запускает сервер в отдельном процессе, "
        "подключает участников, меряет доставку, задержки и ресурсы.")
    parser.add_argument("--variant", choices=list(VARIANTS), default="tcp",
                        help="какой сервер мерить (по умолчанию tcp); ceiling — простейший "
                             "пересыльщик, потолок самого стенда")
    parser.add_argument("--scenario", choices=list(SCENARIOS),
                        help="готовая нагрузка (см. benchmarks/README.md); явные параметры её уточняют")
    parser.add_argument("--clients", type=int, metavar="N",
                        help=f"участников (по умолчанию {DEFAULTS['clients']})")
    parser.add_argument("--senders", type=int, metavar="K",
                        help=f"сколько из них отправляют (по умолчанию {DEFAULTS['senders']})")
    parser.add_argument("--messages", type=int, metavar="M",
                        help=f"сообщений от каждого отправителя (по умолчанию {DEFAULTS['messages']})")
    parser.add_argument("--size", type=int, metavar="B",
                        help=f"байт в сообщении (по умолчанию {DEFAULTS['size']})")
    parser.add_argument("--rate", type=float, metavar="R",
                        help="сообщений в секунду от каждого; 0 — как можно быстрее (по умолчанию)")
    parser.add_argument("--slow-readers", type=int, metavar="S",
                        help="ещё участники, которые входят и никогда не читают (по умолчанию 0)")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="повторить N раз; в конце — медианы")
    parser.add_argument("--compare", metavar="A,B",
                        help="сравнить варианты через запятую (прогоны чередуются); "
                             "печатается отношение медиан доставок/с к последнему")
    parser.add_argument("--ceiling", action="store_true",
                        help="прогнать ту же нагрузку и через пересыльщик ceiling и "
                             "напечатать потолок стенда рядом")
    parser.add_argument("--deadline", type=float, metavar="С",
                        help=f"предел одного прогона в секундах (по умолчанию {DEFAULTS['deadline']:g})")
    parser.add_argument("--idle-timeout", type=float, metavar="С",
                        help="остановиться, если столько секунд ничего не приходит "
                             f"(по умолчанию {DEFAULTS['idle_timeout']:g})")
    parser.add_argument("--window", type=int, metavar="W",
                        help=f"одновременных входов (по умолчанию {DEFAULTS['window']})")
    parser.add_argument("--sender-mode", choices=("process", "thread"),
                        help="отправители в отдельном процессе (по умолчанию) или в потоке")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="без темпа и по TCP: отправлять по N сообщений одним sendall "
                             "(у всех — время этой записи; по умолчанию 16; 1 — одна "
                             "запись на сообщение, как у клиента чата, но тогда потолок "
                             "задаёт сам отправитель)")
    parser.add_argument("--rcvbuf", type=int, metavar="БАЙТ",
                        help="SO_RCVBUF быстрых участников (по умолчанию: TCP — автонастройка, "
                             f"UDP — {UDP_RCVBUF})")
    parser.add_argument("--json", action="store_true",
                        help="печатать по объекту JSON на прогон (и сводку при нескольких)")
    return whole


def main(argv=None):
    args = build_parser().parse_args(argv)
    variants = args.compare.split(",") if args.compare else [args.variant]
    variants = [v.strip() for v in variants if v.strip()]
    for variant in variants:
        if variant not in VARIANTS:
            build_parser().error(f"неизвестный вариант {variant!r}")
    if args.ceiling and "ceiling" not in variants:
        variants.append("ceiling")
    kwargs = dict(clients=args.clients, senders=args.senders, messages=args.messages,
                  size=args.size, rate=args.rate, slow_readers=args.slow_readers,
                  deadline=args.deadline, idle_timeout=args.idle_timeout, window=args.window,
                  sender_mode=args.sender_mode, rcvbuf=args.rcvbuf, batch=args.batch)
    try:
        params = resolve_params(args.scenario, **kwargs)
    except ValueError as error:
        build_parser().error(str(error))

    def show(result):
        if args.json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
        else:
            status = f"  ошибка: {result['error']}" if result["error"] else ""
            print(f"прогон {result['run']} · {result['variant']}: "
                  f"{_cell(result['deliveries_per_s'], ',.0f')} доставок/с, "
                  f"получено {result['received']}/{result['expected']}, "
                  f"p99 {_cell(result['latency_p99_ms'], '.2f')} мс{status}",
                  file=sys.stderr, flush=True)

    if not args.json:
        for variant in variants:
            print(describe(params, variant, args.scenario), file=sys.stderr)
    series = run_series(variants, args.runs, scenario=args.scenario, on_result=show, **kwargs)
    summary = series["summary"]
    if args.json:
        if len(series["runs"]) > 1:
            print(json.dumps(summary, ensure_ascii=False), flush=True)
    else:
        if len(variants) == 1:
            columns = [(f"прогон {r['run']}", r) for r in series["runs"]]
            if args.runs > 1:
                columns.append(("медиана", summary["medians"][variants[0]]))
        else:
            columns = [(f"{v} (медиана)" if args.runs > 1 else v, summary["medians"][v])
                       for v in variants]
        print(format_table(columns))
        for name, ratio in summary["ratios"].items():
            print(f"отношение медиан доставок/с / ratio of medians, {name}: {ratio:.2f}")
        errors = [r for r in series["runs"] if r["error"]]
        for r in errors:
            print(f"ошибка прогона {r['run']} ({r['variant']}): {r['error']}")
    return 1 if any(r["error"] for r in series["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
