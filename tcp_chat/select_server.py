"""Multi-user TCP chat server: one thread, an event loop (``python -m tcp_chat.select_server``).

Where ``tcp_chat/server.py`` gives each client two threads waiting in ``recv()`` and
``sendall()``, one thread here waits for *all* sockets at once: ``selectors`` (epoll,
select) says which can be read or written without waiting, and the loop does just that;
what a socket does not take waits in a buffer bounded as the outbox.  All else is the same."""

import contextlib
import selectors
import socket
import sys
import time

from chat_common import cli, config, protocol
from chat_common.base_server import BaseChatServer
from chat_common.framing import LineFramer

RECV_BYTES = 65536  # a lot, so a busy sender costs few recv() calls
POLL_INTERVAL = 0.2  # seconds select() waits before looking at deadlines and stop()


class Connection:
    """A client: socket, framer, bytes not sent yet, a deadline (for a name or to flush)."""

    def __init__(self, sock, address, limits):
        self.sock = sock
        self.label = f"{address[0]}:{address[1]}"
        self.name = None  # set on joining, for the log
        self.drop_reason = None  # why the server ends this connection
        self.framer = LineFramer(limits.max_message_bytes)
        self.outbox = bytearray()
        self.lines = 0  # lines in the outbox
        self.deadline = time.monotonic() + limits.name_timeout
        self.closing = None  # the log's cause, once nothing more is read


class ChatServer(BaseChatServer):
    """Event-loop TCP chat server with the API of ``tcp_chat.server.ChatServer``."""

    transport = "TCP"

    def __init__(self, host=config.HOST, port=config.TCP_PORT, **limits):
        self.limits = config.TcpLimits(**limits)
        super().__init__(protocol.ChatRoom(max_message_bytes=self.limits.max_message_bytes),
                         self._event_loop, "event loop")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family,
                                              backlog=self.limits.backlog)
        self._listener.setblocking(False)
        self.address = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._connections = set()  # named or not; only the loop thread touches it

    def _event_loop(self):
        while not self._stopping.is_set():
            ready = self._selector.select(POLL_INTERVAL)
            with self._lock:  # one thread does all: only member_count waits for this turn
                for key, events in ready:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif events & selectors.EVENT_READ and key.data in self._connections:
                        self._read(key.data)  # "in": not closed earlier in this turn
                    elif key.data in self._connections:
                        self._write(key.data)  # if both are ready, this waits a turn
                self._check_deadlines()

    def _accept(self):
        try:
            sock, address = self._listener.accept()
        except BlockingIOError:
            return
        except OSError as error:  # e.g. EMFILE: wait, for the listener stays "readable"
            self.log.warning("accept() не удался: %s", error)
            self._stopping.wait(POLL_INTERVAL)
            return
        conn = Connection(sock, address, self.limits)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as tcp_chat/server.py
        if len(self._connections) >= self.limits.max_clients:
            self.log.warning("Отказ %s: сервер переполнен", conn.label)
            with contextlib.suppress(OSError):  # one non-blocking try, nothing more
                sock.send(protocol.encode_line(protocol.server_full_line(self.limits.max_clients)))
            sock.close()
            return
        self._connections.add(conn)
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self.log.info("Подключение %s", conn.label)
        self._send_to(conn, protocol.encode_line(protocol.NAME_PROMPT))

    def _read(self, conn):
        try:
            data = conn.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError as error:
            return self._close(conn, f"ошибка соединения: {error}")
        if not data:
            return self._close(conn, conn.drop_reason or "соединение закрыто клиентом")
        if self._apply(conn, conn.framer.feed(data)):
            quit = "выход командой /quit" if conn.name else "ушёл, не выбрав имя"
            self._close_after_flush(conn, quit)

    def _write(self, conn):
        try:
            sent = conn.sock.send(conn.outbox)  # selectors said it takes at least a byte
        except OSError as error:
            return self._close(conn, f"ошибка соединения: {error}")
        conn.lines -= conn.outbox.count(b"\n", 0, sent)
        del conn.outbox[:sent]
        if not conn.outbox and conn.closing:
            self._close(conn, conn.closing)
        elif not conn.outbox:
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _check_deadlines(self):
        for conn in [conn for conn in self._connections if conn.deadline < time.monotonic()]:
            if conn.closing:
                self._close(conn, conn.closing)  # flushing took too long
            elif conn.name is None:
                self._send_to(conn, protocol.encode_line(
                    protocol.name_timeout_line(self.limits.name_timeout)))
                self._close_after_flush(conn, "имя не получено вовремя")

    def _shut_down(self):
        """Tell every member, flush the buffers (bounded), close every socket."""
        self._selector.unregister(self._listener)
        self._listener.close()
        deadline = time.monotonic() + self.limits.flush_timeout
        with self._lock:
            for conn in list(self._connections):
                self._send_to(conn, protocol.encode_line(protocol.SHUTDOWN_NOTICE))
                conn.closing = "сервер остановлен"  # nothing more is queued for him
            for conn in list(self._connections):
                self._close_after_flush(conn, conn.closing)
            while self._connections and time.monotonic() < deadline:
                for key, _ in self._selector.select(max(deadline - time.monotonic(), 0)):
                    self._write(key.data)  # only writes are waited for now
            for conn in list(self._connections):
                self._close(conn, "сервер остановлен")
        self._selector.close()

    def _apply(self, conn, lines):
        for line in lines:
            outcome = self._room.receive(conn, line)
            if outcome.joined:
                conn.name = outcome.joined
                conn.deadline = float("inf")
                self.log.info("Вход в чат: %s (%s)", conn.name, conn.label)
            self.log.debug("%s: %s", conn.name or conn.label, outcome.text)
            self._deliver(outcome.deliveries)
            if outcome.close or conn.drop_reason:  # he quit, or his outbox overflowed
                break
        return bool(lines) and outcome.close  # the last line applied was /quit

    def _send_to(self, conn, data):
        if conn.drop_reason or conn.closing:
            return
        lines = data.count(b"\n")
        if conn.lines + lines > self.limits.send_queue_limit or \
                len(conn.outbox) + len(data) > self.limits.send_queue_bytes:
            conn.drop_reason = protocol.SLOW_READER_REASON
            self._close(conn, protocol.SLOW_READER_REASON)
            return
        if not conn.outbox:
            self._selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        conn.outbox += data
        conn.lines += lines

    def _close_after_flush(self, conn, cause):
        """Leave the room now, read no more, close once flushed (or at the deadline)."""
        self._deliver(self._room.leave(conn, conn.drop_reason))
        conn.closing = cause
        conn.deadline = time.monotonic() + self.limits.flush_timeout
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)

    def _close(self, conn, cause):
        """Forget ``conn``; if he was a member, tell the others (once)."""
        if conn not in self._connections:
            return
        self._connections.discard(conn)
        self._deliver(self._room.leave(conn, conn.drop_reason))
        self._selector.unregister(conn.sock)
        conn.sock.close()
        who = f"{conn.name} ({conn.label})" if conn.name else conn.label
        self.log.info("Отключение %s: %s", who, cause)


def build_parser():
    """The command line of ``python -m tcp_chat.select_server``."""
    return cli.build_parser("tcp", cli.SERVER, prog="python -m tcp_chat.select_server")


def main(argv=None):
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    return cli.run_server(ChatServer, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
