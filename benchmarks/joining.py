"""Members of a benchmark joining the chat, as chat clients would, and leaving.

TCP: connect, wait for the prompt ``***``, send the name, wait for the
welcome «Добро пожаловать».  UDP: a ``/join NAME`` datagram and the welcome
in reply; a lost one is sent again after ``UDP_JOIN_RETRY`` seconds.  At
most ``window`` handshakes are in progress at once, so that a 1000-member
join does not overflow the listen backlog of 128.  Members already in read
and drop the notices of later joins, as chat clients would: every join is
announced to everyone, so N members cost the server N·(N−1)/2 notices.
Slow readers (a tiny ``SO_RCVBUF``) read nothing after their welcome.
"""

import errno
import selectors
import socket
import time

from chat_common import protocol
from chat_common.text import number
from benchmarks.server_process import BenchError

UDP_RCVBUF = 4 << 20
"""SO_RCVBUF asked for UDP members (the kernel caps it at net.core.rmem_max)."""

SLOW_RCVBUF = 4096
"""SO_RCVBUF of a slow reader (set before connect)."""

UDP_JOIN_RETRY = 1.0
WATCH_INTERVAL = 0.5  # seconds between looks at the server's health while joining


class JoinIncomplete(BenchError):
    """The deadline passed before every member joined.  ``joined``: how many
    had; ``total``: how many were to; ``socks``: the sockets, still open,
    when :func:`join_members` was asked to ``keep_open`` (the caller closes
    them), else empty."""

    def __init__(self, joined, total, socks=()):
        super().__init__(f"за отведённое время вошли не все: {number(joined)} из {number(total)}")
        self.joined = joined
        self.total = total
        self.socks = list(socks)


def new_socket(transport, rcvbuf):
    """A member's socket (TCP_NODELAY on TCP); ``rcvbuf``: SO_RCVBUF or 0."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect
    if transport == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def join_members(transport, address, names, rcvbufs, deadline, window=64, readers=None, *,
                 watch=None, keep_open=False):
    """Join every name; return ``(sockets, join_seconds)``.

    At most ``window`` handshakes are in progress at once.  The first
    ``readers`` members (default: all) go on reading (and dropping) what
    arrives until the last one joined, as chat clients would; the others
    read nothing after their welcome.  Sockets come back in blocking mode.
    ``watch()``, if given, is called about every ``WATCH_INTERVAL`` seconds
    and returns None or why the server is beyond hope (then BenchError).

    Raises :class:`JoinIncomplete` if ``deadline`` (``time.monotonic()``)
    passes, :class:`BenchError` if a join is refused or a socket cannot be
    made; the sockets are closed then, except in a ``JoinIncomplete`` with
    ``keep_open``.  Never waits past ``deadline`` by more than one turn of
    reading what is ready.
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
    watched = time.monotonic()
    active = set()
    joined = 0
    kept = False
    try:
        while joined < n:
            while len(active) < window and len(socks) < n:
                i = len(socks)
                try:
                    sock = new_socket(transport, rcvbufs[i])
                except OSError as error:  # EMFILE: the open-files limit is too low
                    why = ("кончились дескрипторы файлов (EMFILE): поднимите ulimit -n"
                           if error.errno == errno.EMFILE else str(error))
                    raise BenchError(f"не открыть сокет участника {number(i + 1)}: {why}") from None
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
                kept = keep_open
                raise JoinIncomplete(joined, n, socks if keep_open else ())
            if watch is not None and now - watched >= WATCH_INTERVAL:
                watched = now
                problem = watch()
                if problem:
                    raise BenchError(problem)
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
        if not kept:
            for sock in socks:
                sock.close()
        raise
    finally:
        sel.close()
    for sock in socks:
        sock.setblocking(True)
    return socks, join_s


def drain_check(sock, limit_s=2.0):
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


def close_abruptly(sock):
    """Close with a reset (SO_LINGER 0): the server sees the end at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()
