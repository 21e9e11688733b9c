"""Helpers of the UDP tests (``test_udp_server.py`` and ``test_udp_cli.py``).

Everything runs on real UDP sockets bound to 127.0.0.1 with ports chosen by
the OS (port 0).  Every blocking call has its own timeout, so a broken server
fails a test quickly instead of hanging until pytest-timeout stops the run.

Loopback UDP does not lose or reorder a handful of datagrams in practice, and
the server handles datagrams one at a time in one thread.  So most tests prove
"nothing else was sent" with a *marker*: a later datagram whose answer must be
the very next one to arrive (``Peer.users``, ``Peer.replies_until_marker``).
A short wait for silence is added only where no later datagram can prove the
absence (after the marker of a stranger, at shutdown, during liveness).
"""

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat_common import config
from chat_common import protocol
from udp_chat import server as server_module
from udp_chat.client import ChatClient
from udp_chat.server import ChatServer

LOCALHOST = "127.0.0.1"

REPO_ROOT = Path(__file__).resolve().parent.parent

TIMEOUT = 10.0
"""Seconds a single wait for something that *must* happen may take.
Generous on purpose (a busy CI machine can stall a process for seconds):
it only matters when the test is failing anyway."""

SILENCE = 0.3
"""Seconds of quiet that count as "nothing arrives"."""

USERS_PREFIX = protocol.NOTICE_PREFIX + "Сейчас в чате ("
"""Start of the answer to ``/users`` (and of the list inside the welcome)."""


def _empty_name_error():
    try:
        protocol.validate_name("")
    except protocol.NameRefused as error:
        return protocol.error_line(str(error))
    raise AssertionError("an empty name must be refused")


EMPTY_NAME_ERROR = _empty_name_error()
"""The answer to ``/join`` without a name: a stranger's marker datagram."""


def online(line):
    """Names listed by a ``/users`` answer (list of ``str``, in join order).

    Also checks that the count in brackets matches the list.
    """
    match = re.fullmatch(r"\*\*\* Сейчас в чате \((\d+)\): (.*)", line)
    assert match, line
    names = match[2].split(", ") if match[2] else []
    assert int(match[1]) == len(names), line
    return names


def is_notice_about(line, name):
    """True if ``line`` is a ``***`` notice that names ``name``."""
    return line.startswith(protocol.NOTICE_PREFIX) and name in line


def dead_udp_port():
    """A UDP port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


# --- A raw UDP peer --------------------------------------------------------
class Peer:
    """A bare UDP socket talking to the server, for tests where bytes matter.

    The socket is connected to the server, so it only receives the server's
    datagrams.  Every datagram received is checked to be exactly one line:
    UTF-8 text ending in one ``\\n``.
    """

    def __init__(self, server_address):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOCALHOST, 0))
        self.sock.connect(tuple(server_address))
        self.sock.settimeout(TIMEOUT)
        self.address = self.sock.getsockname()
        self.name = None

    # Sending ------------------------------------------------------------
    def send(self, data):
        """Send one datagram: ``bytes`` as they are, ``str`` as UTF-8."""
        if isinstance(data, str):
            data = data.encode(config.ENCODING)
        self.sock.send(data)

    # Receiving ----------------------------------------------------------
    def recv_bytes(self, timeout=TIMEOUT):
        """The next datagram as bytes; fails the test after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except socket.timeout:
            pytest.fail(f"no datagram arrived within {timeout} s")

    def recv(self, timeout=TIMEOUT):
        """The next datagram as one line of text, without its ``\\n``."""
        data = self.recv_bytes(timeout)
        assert data.endswith(b"\n") and data.count(b"\n") == 1, data[:200]
        return data[:-1].decode(config.ENCODING)

    def drain(self, quiet=SILENCE, timeout=TIMEOUT):
        """Every datagram until none arrives for ``quiet`` seconds (list of bytes).

        Fails if datagrams keep coming for longer than ``timeout``.
        """
        deadline = time.monotonic() + timeout
        received = []
        while True:
            self.sock.settimeout(quiet)
            try:
                received.append(self.sock.recv(65535))
            except socket.timeout:
                return received
            if time.monotonic() > deadline:
                pytest.fail(f"datagrams kept coming for {timeout} s: {received[-3:]!r}")

    def replies_until_marker(self):
        """For a stranger: every datagram up to the answer to a marker.

        Sends ``/join`` without a name, whose answer is a distinct error, and
        returns the datagrams (bytes) that arrived before that answer: the
        replies to everything this stranger sent earlier, exactly.
        """
        self.send("/join")
        marker = (EMPTY_NAME_ERROR + "\n").encode(config.ENCODING)
        received = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            data = self.recv_bytes(max(deadline - time.monotonic(), 0.001))
            if data == marker:
                return received
            received.append(data)

    def expect_silence(self, seconds=SILENCE):
        """Assert that no datagram arrives for ``seconds``."""
        received = self.drain(seconds)
        assert received == [], f"unexpected datagrams: {received!r}"

    # Chat ---------------------------------------------------------------
    def join(self, name):
        """Send ``/join name``; return the welcome line."""
        self.send(f"/join {name}")
        welcome = self.recv()
        assert welcome.startswith(f"{protocol.WELCOME_PREFIX}, {name}!"), welcome
        self.name = name
        return welcome

    def users(self):
        """Round trip through the server: send ``/users``, return who is online.

        Any reply caused by an earlier datagram would arrive before this
        answer, so it doubles as a marker for "nothing else came back".
        """
        self.send("/users")
        return online(self.recv())

    def close(self):
        self.sock.close()


def chat_room(make_peer, address, *names):
    """Join one :class:`Peer` per name, in order; return the list of peers.

    Each earlier peer's join notice about the later ones is read and checked,
    so every returned peer starts with nothing pending.
    """
    peers = []
    for name in names:
        peer = make_peer(address)
        peer.join(name)
        for other in peers:
            notice = other.recv()
            assert is_notice_about(notice, name), notice
        peers.append(peer)
    return peers


# --- Fixtures ----------------------------------------------------------------
# A test module makes them visible to pytest by binding them at module level
# (``make_peer = udp_support.make_peer``).  The names differ from the TCP
# fixtures of conftest.py, so neither hides the other.
FAST_POLL = 0.05
"""Seconds the server's ``recvfrom()`` waits before it looks at stop() again.

The default (0.5 s) makes every stop() take up to half a second; a shorter
poll only changes how late the server notices it should stop, not what it
does, and keeps the suite fast.  The life-cycle test uses the default."""


@pytest.fixture
def make_udp_server(monkeypatch):
    """Factory of started :class:`ChatServer` objects on 127.0.0.1, port 0.

    Keyword arguments go to the constructor; every server is stopped at the
    end of the test (stop() is idempotent, so a test may stop it earlier).
    """
    monkeypatch.setattr(server_module, "MAX_POLL_INTERVAL", FAST_POLL)
    servers = []

    def make(**kwargs):
        server = ChatServer(LOCALHOST, 0, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def udp_server(make_udp_server):
    """A started UDP :class:`ChatServer` with the default limits."""
    return make_udp_server()


@pytest.fixture
def make_peer():
    """Factory of :class:`Peer` objects, closed at the end of the test."""
    peers = []

    def make(address):
        peer = Peer(address)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture
def make_udp_client():
    """Factory of joined UDP :class:`ChatClient` objects, closed at the end.

    ``make_client(address, name, **kwargs)``; joining has a timeout.
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


# --- Queues of a ChatClient -----------------------------------------------
def next_line(lines, timeout=TIMEOUT):
    """The next item of a ``queue.Queue`` (a ChatClient's ``lines``)."""
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line arrived within {timeout} s")


def no_line(lines, seconds=SILENCE):
    """Assert that a ``queue.Queue`` stays empty for ``seconds``."""
    try:
        line = lines.get(timeout=seconds)
    except queue.Empty:
        return
    pytest.fail(f"unexpected line: {line!r}")


# --- Subprocesses ---------------------------------------------------------
def child_env():
    """Environment of a CLI subprocess: UTF-8 on its pipes, repo importable."""
    env = dict(os.environ)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def run_module(module, *args, **kwargs):
    """``python -m module args`` from the repo root, waited for (bounded).

    Keywords go to :func:`subprocess.run`; ``input`` is ``str`` encoded as
    UTF-8.  Returns the CompletedProcess with ``stdout``/``stderr`` as ``str``.
    """
    kwargs.setdefault("timeout", 3 * TIMEOUT)
    if kwargs.get("input") is not None:
        kwargs["input"] = kwargs["input"].encode(config.ENCODING)
    else:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO_ROOT, env=child_env(), capture_output=True, **kwargs,
    )
    result.stdout = result.stdout.decode(config.ENCODING)
    result.stderr = result.stderr.decode(config.ENCODING)
    return result


class Child:
    """A CLI program running as a subprocess, its output read by threads.

    Lines of stdout and stderr go to the queues ``stdout`` and ``stderr`` as
    they come (``str`` without the line ending) and are also kept in full.
    """

    def __init__(self, module, *args, stdin=subprocess.DEVNULL):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *map(str, args)],
            cwd=REPO_ROOT, env=child_env(),
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.stdout, self.stderr = queue.Queue(), queue.Queue()
        self.out_lines, self.err_lines = [], []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, self.out_lines),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, self.err_lines),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe, lines, kept):
        for raw in pipe:
            line = raw.decode(config.ENCODING, errors="replace").rstrip("\r\n")
            kept.append(line)
            lines.put(line)
        pipe.close()

    def wait_for(self, lines, predicate, timeout=TIMEOUT):
        """The first line of queue ``lines`` matching ``predicate``; fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                pytest.fail(f"no matching line within {timeout} s; stderr: {self.err_lines[-5:]}")
            if predicate(line):
                return line

    def wait(self, timeout=TIMEOUT):
        """Wait for the exit and for all output; return the exit code."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def kill(self):
        """Last resort at teardown: never leave a process behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        if self.proc.stdin:
            self.proc.stdin.close()


@pytest.fixture
def spawn():
    """Factory of :class:`Child` processes, killed at the end if still running."""
    children = []

    def start(module, *args, **kwargs):
        child = Child(module, *args, **kwargs)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()
