"""Shared fixtures and helpers of the test suite.

Everything here runs on real sockets bound to 127.0.0.1 with ports chosen by
the OS (port 0), so tests never collide with a chat a student is running.
Every blocking call has its own timeout: a broken server makes a test fail
quickly instead of hanging until pytest-timeout kills the whole run.

The helpers are transport-neutral where they can be (``wait_until``, the
expected lines worded by ``ChatRoom``, ``LineReader`` and ``run_module`` for
subprocesses); the TCP ones (``RawClient``, ``server``, ``make_server``,
``make_client``, ``make_raw``) sit next to them, and the UDP tests may add
their own.

Both TCP servers, ``tcp_chat.server`` (thread per client) and
``tcp_chat.select_server`` (one thread, ``selectors``), must pass the same
behaviour tests: every fixture that builds a TCP ``ChatServer`` is
parametrized over :data:`TCP_SERVERS` (test ids ``threads`` and ``select``).
A test that needs one of them only overrides ``tcp_server_module``, for
example ``@pytest.mark.parametrize("tcp_server_module", ["threads"], indirect=True)``.
"""

import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat_common import config
from chat_common import protocol
from tcp_chat import select_server as tcp_select_server
from tcp_chat import server as tcp_server
from tcp_chat.client import ChatClient

LOCALHOST = "127.0.0.1"

REPO_ROOT = Path(__file__).resolve().parent.parent

TIMEOUT = 5.0
"""Seconds any single wait for something that *must* happen may take.
Generous on purpose: it only matters when the test is failing anyway."""

SILENCE = 0.2
"""Seconds of quiet that count as "nothing arrives".  Used only where no
later line can prove the absence; most tests use a marker line instead."""


# --- Generic helpers -----------------------------------------------------------
def wait_until(condition, timeout=TIMEOUT, message="condition"):
    """Poll ``condition()`` until it is true; fail after ``timeout`` seconds.

    Only for state that offers no event to wait on (for example the
    server's member count); the pause between polls is a wait on an
    event that is never set, bounded by the deadline.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        pause.wait(min(0.02, left))


def next_line(client, timeout=TIMEOUT):
    """The next line a :class:`ChatClient` received (its ``lines`` queue)."""
    try:
        return client.lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line arrived within {timeout} s")


def collect(client, count, timeout=TIMEOUT):
    """``count`` next lines of a :class:`ChatClient`, overall within ``timeout``."""
    deadline = time.monotonic() + timeout
    lines = []
    while len(lines) < count:
        left = deadline - time.monotonic()
        try:
            lines.append(client.lines.get(timeout=max(left, 0.001)))
        except queue.Empty:
            pytest.fail(f"got {len(lines)} of {count} lines within {timeout} s: {lines[-5:]}")
    return lines


def no_line(client, seconds=SILENCE):
    """Assert that a :class:`ChatClient` receives nothing for ``seconds``."""
    try:
        line = client.lines.get(timeout=seconds)
    except queue.Empty:
        return
    pytest.fail(f"unexpected line: {line!r}")


def free_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


# --- Expected lines ---------------------------------------------------------------
# The transports must deliver exactly what the chat rules word, so the tests
# ask a ChatRoom for the expected text instead of copying the Russian wording.
# Each helper also checks the line against the rule of the issue.
_WATCHER = "Наблюдатель-0"


def _one_line_for(room, deliveries, key):
    lines = [d.line for d in deliveries if key in room.recipients(d)]
    assert len(lines) == 1, lines
    return lines[0]


def join_notice(name):
    """The ``***`` line the others get when ``name`` joins."""
    room = protocol.ChatRoom()
    room.join("watcher", _WATCHER)
    line = _one_line_for(room, room.join("newcomer", name), "watcher")
    assert line.startswith(protocol.NOTICE_PREFIX) and name in line
    return line


def welcome_line(*names):
    """The welcome the last of ``names`` gets, after the others joined in order."""
    room = protocol.ChatRoom()
    for i, name in enumerate(names[:-1]):
        room.join(i, name)
    line = _one_line_for(room, room.join("newcomer", names[-1]), "newcomer")
    assert line.startswith(protocol.WELCOME_PREFIX)
    assert ", ".join(names) in line  # lists who is online
    return line


def leave_notice(name, reason=None):
    """The ``***`` line the others get when ``name`` leaves."""
    room = protocol.ChatRoom()
    room.join("watcher", _WATCHER)
    room.join("leaver", name)
    line = _one_line_for(room, room.leave("leaver", reason), "watcher")
    assert line.startswith(protocol.NOTICE_PREFIX) and name in line
    return line


def goodbye_line(name):
    """The ``***`` answer to ``/quit`` of ``name``."""
    room = protocol.ChatRoom()
    room.join("leaver", name)
    line = _one_line_for(room, room.handle("leaver", "/quit").deliveries, "leaver")
    assert line.startswith(protocol.NOTICE_PREFIX) and name in line
    return line


def users_line(*names):
    """The ``***`` answer to ``/users`` when ``names`` are online, in this order."""
    room = protocol.ChatRoom()
    for i, name in enumerate(names):
        room.join(i, name)
    line = _one_line_for(room, room.handle(0, "/users").deliveries, 0)
    assert line.startswith(protocol.NOTICE_PREFIX) and f"({len(names)})" in line
    assert ", ".join(names) in line
    return line


def is_users_line(line):
    """True if ``line`` is an answer to ``/users`` (whoever is online)."""
    probe = users_line("x")
    prefix = probe[:probe.index("(1)")]
    return line.startswith(prefix + "(")


# --- Raw TCP client ------------------------------------------------------------
class RawClient:
    """A bare TCP connection for tests where the exact bytes matter.

    Reads are line-based with their own buffer, and every read has a
    timeout; nothing is decoded or repaired behind the test's back.
    """

    def __init__(self, address, *, rcvbuf=None, timeout=TIMEOUT):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Must be set before connect() to limit the advertised window.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect(tuple(address))
        self._buffer = b""
        self.eof = False

    # Sending ------------------------------------------------------------
    def send_bytes(self, data):
        self.sock.sendall(data)

    def send_line(self, text, ending="\n"):
        self.sock.sendall((text + ending).encode(config.ENCODING))

    # Receiving ----------------------------------------------------------
    def _fill(self, timeout):
        """One ``recv`` into the buffer; False at EOF. ``socket.timeout`` if quiet."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    def read_line_bytes(self, timeout=TIMEOUT):
        """The next line as raw bytes, ``\\n`` included; fails on timeout or EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no complete line within {timeout} s; have {self._buffer[:200]!r}")
            try:
                if not self._fill(left):
                    pytest.fail(f"connection closed; unfinished data {self._buffer[:200]!r}")
            except socket.timeout:
                pytest.fail(f"no complete line within {timeout} s; have {self._buffer[:200]!r}")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def read_line(self, timeout=TIMEOUT):
        """The next line decoded strictly as UTF-8, without its ``\\n`` only."""
        return self.read_line_bytes(timeout)[:-1].decode(config.ENCODING)

    def read_lines(self, count, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        return [self.read_line(max(deadline - time.monotonic(), 0.001)) for _ in range(count)]

    def expect_silence(self, seconds=SILENCE):
        """Assert that no byte arrives (and the connection stays open) for ``seconds``."""
        assert not self._buffer, f"unexpected data: {self._buffer[:200]!r}"
        try:
            alive = self._fill(seconds)
        except socket.timeout:
            return
        assert alive, "connection closed unexpectedly"
        pytest.fail(f"unexpected data: {self._buffer[:200]!r}")

    def expect_eof(self, timeout=TIMEOUT):
        """Assert that the server closes the connection with no more lines.

        A reset counts as closed too: the server may close a socket whose
        last bytes from us it did not read.
        """
        assert not self._buffer, f"unexpected data: {self._buffer[:200]!r}"
        try:
            alive = self._fill(timeout)
        except socket.timeout:
            pytest.fail(f"connection still open after {timeout} s")
        except ConnectionResetError:
            return
        assert not alive, f"unexpected data instead of EOF: {self._buffer[:200]!r}"

    def drain_to_eof(self, timeout=TIMEOUT):
        """Read and drop everything until the server closes; fail on timeout.

        Returns the number of bytes dropped.  A reset counts as closed.
        """
        deadline = time.monotonic() + timeout
        dropped = len(self._buffer)
        self._buffer = b""
        try:
            while self._fill(max(deadline - time.monotonic(), 0.001)):
                dropped += len(self._buffer)
                self._buffer = b""
        except socket.timeout:
            pytest.fail(f"connection still open after {timeout} s")
        except ConnectionResetError:
            pass
        return dropped

    # Handshake ----------------------------------------------------------
    def join(self, name, ending="\n"):
        """Read the prompt, send ``name``; return the welcome line."""
        assert self.read_line() == protocol.NAME_PROMPT
        self.send_line(name, ending)
        welcome = self.read_line()
        assert welcome.startswith(protocol.WELCOME_PREFIX), welcome
        return welcome

    def sync(self):
        """Round trip through the server: send ``/users``, return its answer.

        The server handles one connection's lines in order and its outgoing
        queue is FIFO, so any reply caused by earlier lines (an echo, an
        error) would arrive *before* this answer.  That turns "nothing else
        came back" into an exact check instead of a wait for silence.
        """
        self.send_line("/users")
        line = self.read_line()
        assert is_users_line(line), line
        return line

    # Closing ------------------------------------------------------------
    def reset(self):
        """Close abruptly: SO_LINGER with 0 s makes close() send RST, not FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


def client_sync(client):
    """:meth:`RawClient.sync` for a :class:`ChatClient`."""
    client.send("/users")
    line = next_line(client)
    assert is_users_line(line), line
    return line


# --- TCP fixtures ----------------------------------------------------------------
TCP_SERVERS = {"threads": tcp_server, "select": tcp_select_server}
"""The two TCP server modules by test id; each has a ``ChatServer`` with one API,
one command line (``python -m MODULE``) and a logger named after the module."""

TCP_SERVER_MODULES = [module.__name__ for module in TCP_SERVERS.values()]
"""Their module names, for the command-line tests (same order as the ids)."""

TCP_SERVER_IDS = list(TCP_SERVERS)


@pytest.fixture(params=TCP_SERVER_IDS)
def tcp_server_module(request, monkeypatch):
    """The module of the TCP server under test: ``tcp_chat.server`` or
    ``tcp_chat.select_server`` (ids ``threads`` and ``select``)."""
    # stop() waits for the server thread's next look at the stop flag (the
    # accept thread's accept() timeout, the event loop's select() timeout);
    # a shorter poll only makes the many stops of the suite quicker.
    monkeypatch.setattr(tcp_server, "ACCEPT_POLL_INTERVAL", 0.02)
    monkeypatch.setattr(tcp_select_server, "POLL_INTERVAL", 0.02)
    return TCP_SERVERS[request.param]


@pytest.fixture
def server_class(tcp_server_module):
    """The ``ChatServer`` class of the TCP server under test."""
    return tcp_server_module.ChatServer


@pytest.fixture
def make_server(server_class):
    """Factory of started TCP ``ChatServer`` objects on 127.0.0.1, port 0,
    of both servers in turn (see :func:`tcp_server_module`).

    Keyword arguments go to the constructor.  Every server is stopped at the
    end of the test (stop() is idempotent, so tests may stop them earlier).
    """
    servers = []

    def make(**kwargs):
        server = server_class(LOCALHOST, 0, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server):
    """A started TCP ``ChatServer`` with the default limits (both servers in turn)."""
    return make_server()


@pytest.fixture
def make_client():
    """Factory of joined :class:`ChatClient` objects, closed at the end.

    ``make_client(address, name, **kwargs)``; the handshake has a timeout.
    """
    clients = []

    def make(address, name, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        client = ChatClient(*address, name, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close(timeout=TIMEOUT)


@pytest.fixture
def make_raw():
    """Factory of :class:`RawClient` objects, closed at the end."""
    raws = []

    def make(address, **kwargs):
        raw = RawClient(address, **kwargs)
        raws.append(raw)
        return raw

    yield make
    for raw in raws:
        raw.close()


# --- Subprocesses -----------------------------------------------------------------------
class LineReader:
    """Reads a text stream of a subprocess in a thread, line by line.

    Reading in a thread keeps the pipe drained (a full pipe would block the
    child) and lets the test wait for one line with a timeout.
    """

    def __init__(self, stream):
        self.lines = []  # every line read so far, without "\n"
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        try:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        finally:
            stream.close()  # the reader owns the stream: nobody closes it under us
            self._queue.put(None)

    def wait_for(self, condition, timeout=TIMEOUT):
        """The first unread line for which ``condition(line)`` is true.

        Lines before it stay in :attr:`lines`.  Fails on timeout or EOF.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                pytest.fail(f"no matching line within {timeout} s; got {self.lines[-10:]}")
            if line is None:
                self._queue.put(None)  # stay at EOF for later calls
                pytest.fail(f"stream ended without a matching line; got {self.lines[-10:]}")
            self.lines.append(line)
            if condition(line):
                return line

    def read_all(self, timeout=TIMEOUT):
        """Every line up to EOF (the process must be ending); fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                pytest.fail(f"stream still open after {timeout} s")
            if line is None:
                self._queue.put(None)
                return self.lines
            self.lines.append(line)


@pytest.fixture
def run_module():
    """Start ``python -m MODULE ARGS`` from the repository root.

    Returns a ``subprocess.Popen`` in text mode (UTF-8) with pipes for
    stdout and stderr and, unless ``stdin`` is given, for stdin.  Read the
    output with ``communicate()`` or a :class:`LineReader` each (they close
    the pipes).  Every process still running at the end of the test is killed.
    """
    processes = []

    def run(module, *args, stdin=subprocess.PIPE):
        env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        processes.append(process)
        return process

    yield run
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT)
        if process.stdin and not process.stdin.closed:
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass  # unread input of a process that is gone
