"""Multi-user TCP chat server: thread per client (``python -m tcp_chat.server``).

The *accept thread* waits in ``accept()``; each connection gets a *receiver
thread*, which cuts what it reads into lines and applies the chat rules under
the server's one lock, and a *sender thread*, which writes what the rules put
in its bounded :class:`Outbox`: a slow reader delays nobody, he is dropped.
"""

import socket
import sys
import threading
import time

from chat_common import cli, config, protocol
from chat_common.base_server import BaseChatServer
from chat_common.framing import LineFramer

RECV_BYTES = 65536  # a lot, so a busy sender costs few recv() calls
BATCH_BYTES = 65536  # most bytes collected for one member before they go into his outbox
ACCEPT_POLL_INTERVAL = 0.2  # seconds in accept() before looking for stop()


class Outbox:
    """Bounded queue of bytes for one connection: receiver threads :meth:`put`
    lines, its sender thread takes all queued at once (one ``sendall()`` per
    burst).  ``limit``: most lines that may wait, ``max_bytes``: most bytes."""

    def __init__(self, limit=config.SEND_QUEUE_LIMIT, max_bytes=config.SEND_QUEUE_BYTES):
        self.limit = limit
        self.max_bytes = max_bytes
        self._chunks = []
        self._lines = 0
        self._bytes = 0
        self._closed = False
        self._changed = threading.Condition()

    def put(self, data, lines=1):
        """Queue ``data`` (bytes of ``lines`` lines) without blocking.  Returns
        False if it would overflow a limit: the reader is too slow, the outbox
        drops all and closes, the caller drops him.  After close(): True."""
        with self._changed:
            if self._closed:
                return True
            if self._lines + lines > self.limit or self._bytes + len(data) > self.max_bytes:
                self._chunks.clear()
                self.close()  # the Condition's lock is re-entrant
                return False
            self._chunks.append(data)
            self._lines += lines
            self._bytes += len(data)
            self._changed.notify()
            return True

    def take_all(self):
        """Wait for data and return all of it (bytes); None once closed and empty."""
        with self._changed:
            while not self._chunks and not self._closed:
                self._changed.wait()
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._lines = self._bytes = 0
            return data or None

    def close(self):
        """Accept no more data; the sender still sends what is queued."""
        with self._changed:
            self._closed = True
            self._changed.notify()


class Connection:
    """One client connection: socket, framer, outbox and two threads.  Its receiver
    thread owns its life: at the end it removes the member, lets the sender flush, closes."""

    def __init__(self, server, sock, address):
        self.server = server
        self.sock = sock
        self.label = f"{address[0]}:{address[1]}"
        self.name = None  # set on joining, for the log
        self.drop_reason = None  # set by whoever aborts the connection
        # Made in the accept thread, the two threads inherit its daemon=True.
        self.framer = LineFramer(server.limits.max_message_bytes)
        self.outbox = Outbox(server.limits.send_queue_limit, server.limits.send_queue_bytes)
        self.receiver = threading.Thread(target=self._receive_loop, name=f"recv {self.label}")
        self.sender = threading.Thread(target=self._send_loop, name=f"send {self.label}")

    def abort(self, reason=None):
        """Break the connection from any thread (``shutdown()`` wakes both threads)."""
        self.drop_reason = self.drop_reason or reason  # the first reason counts
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never fully connected

    def _receive_loop(self):
        cause = "соединение закрыто клиентом"
        deadline = time.monotonic() + self.server.limits.name_timeout
        try:
            while True:
                # Waiting for a name is bounded in time; chatting is not.
                self.sock.settimeout(None if self.name else max(deadline - time.monotonic(), 0.001))
                data = self.sock.recv(RECV_BYTES)
                if not data:
                    break
                if self.server._apply(self, self.framer.feed(data)):
                    cause = "выход командой /quit" if self.name else "ушёл, не выбрав имя"
                    break
        except TimeoutError:
            cause = "имя не получено вовремя"
            self.outbox.put(protocol.encode_line(
                protocol.name_timeout_line(self.server.limits.name_timeout)))
        except OSError as error:
            cause = f"ошибка соединения: {error}"
        finally:
            self.server._leave(self, self.drop_reason, self.drop_reason or cause)
            self.outbox.close()
            self.sender.join(self.server.limits.flush_timeout)
            self.abort()
            self.sock.close()

    def _send_loop(self):
        while (data := self.outbox.take_all()) is not None:
            try:
                self.sock.sendall(data)
            except OSError:
                self.abort()  # the receiver thread notices and cleans up
                return


class ChatServer(BaseChatServer):
    """Threaded TCP chat server: ``host`` (str), ``port`` (0: any free one), keyword limits
    of :class:`chat_common.config.TcpLimits`.  Binds at once (``OSError`` if taken)."""

    transport = "TCP"

    def __init__(self, host=config.HOST, port=config.TCP_PORT, **limits):
        self.limits = config.TcpLimits(**limits)
        super().__init__(protocol.ChatRoom(max_message_bytes=self.limits.max_message_bytes),
                         self._accept_loop, "accept")
        # create_server sets SO_REUSEADDR (not on Windows), so a restart can bind at once.
        self._listener = socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
            backlog=self.limits.backlog)
        self._listener.settimeout(ACCEPT_POLL_INTERVAL)
        self.address = self._listener.getsockname()[:2]
        self._connections = set()  # named or not; guarded by the lock too
        self._pending = {}  # conn -> bytearray of lines for _flush(); guarded by the lock

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue  # a chance to notice stop()
            except OSError as error:
                self.log.warning("accept() не удался: %s", error)  # e.g. EMFILE: wait, do not spin
                self._stopping.wait(ACCEPT_POLL_INTERVAL)
                continue
            self._open(Connection(self, sock, address))

    def _open(self, conn):
        # Send each burst at once: Nagle's algorithm would wait for an ACK (up to 40 ms).
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            full = len(self._connections) >= self.limits.max_clients
            if not full:
                self._connections.add(conn)
        if full:
            self.log.warning("Отказ %s: сервер переполнен", conn.label)
            try:
                conn.sock.settimeout(1.0)  # a refused client must not hold the accept thread
                conn.sock.sendall(protocol.encode_line(
                    protocol.server_full_line(self.limits.max_clients)))
            except OSError:
                pass
            conn.abort()  # shutdown() first, so the client sees the end at once
            conn.sock.close()
            return
        self.log.info("Подключение %s", conn.label)
        conn.outbox.put(protocol.encode_line(protocol.NAME_PROMPT))
        conn.sender.start()
        conn.receiver.start()

    def _shut_down(self):
        """Tell every member, flush the outboxes (bounded), close, join threads."""
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.outbox.put(protocol.encode_line(protocol.SHUTDOWN_NOTICE))
            conn.outbox.close()
        deadline = time.monotonic() + self.limits.flush_timeout
        for conn in connections:
            conn.sender.join(max(deadline - time.monotonic(), 0))
            conn.abort("сервер остановлен")
        for conn in connections:
            conn.receiver.join()

    def _apply(self, conn, lines):
        """Apply the lines of one ``recv()`` under the lock, so every member gets
        lines in one order; return True if ``conn`` must be closed (``/quit``)."""
        with self._lock:
            for line in lines:
                outcome = self._room.receive(conn, line)
                if outcome.joined:
                    conn.name = outcome.joined
                    self.log.info("Вход в чат: %s (%s)", conn.name, conn.label)
                self.log.debug("%s: %s", conn.name or conn.label, outcome.text)
                self._deliver(outcome.deliveries)
                if outcome.close or conn.drop_reason:  # he quit, or his outbox overflowed
                    break
            self._flush()
        return bool(lines) and outcome.close  # the last line applied was /quit

    def _send_to(self, conn, data):
        # Into his outbox once per recv() (one wake-up of his sender per burst),
        # or at BATCH_BYTES, so that his outbox limit bounds memory as replies are made.
        batch = self._pending.setdefault(conn, bytearray())
        batch += data
        if len(batch) >= BATCH_BYTES:
            self._flush(conn)

    def _flush(self, *conns):  # the given members, or all with lines collected
        for conn in conns or list(self._pending):
            batch = self._pending.pop(conn)
            if not conn.outbox.put(batch, batch.count(b"\n")):
                conn.abort(protocol.SLOW_READER_REASON)

    def _leave(self, conn, reason, cause):
        """Forget ``conn``; if he was a member, tell the others (once)."""
        with self._lock:
            self._connections.discard(conn)
            self._deliver(self._room.leave(conn, reason))
            self._flush()
        who = f"{conn.name} ({conn.label})" if conn.name else conn.label
        self.log.info("Отключение %s: %s", who, cause)


def build_parser():
    """The command line of ``python -m tcp_chat.server``."""
    return cli.build_parser("tcp", cli.SERVER)


def main(argv=None):
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    return cli.run_server(ChatServer, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
