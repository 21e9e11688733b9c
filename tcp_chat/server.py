"""Multi-user TCP chat server: one listening socket and threads.

Threads of a running server:

* the *accept thread* waits in ``accept()`` and starts two threads for every
  new connection;
* the connection's *receiver thread* reads bytes, cuts them into lines
  (:class:`~chat_common.protocol.LineFramer`) and applies the chat rules
  (:class:`~chat_common.protocol.ChatRoom`) under one lock;
* the connection's *sender thread* writes what the rules queued for it.

Broadcasting only puts bytes into each member's bounded :class:`Outbox`; it
never waits on a socket.  So a member who reads slowly (or not at all) delays
nobody: his own sender thread waits for him, his outbox fills up, and he is
disconnected.

Run: ``python -m tcp_chat.server --port 5050``; stop with Ctrl+C.
"""

import logging
import socket
import sys
import threading
import time

from chat_common import config
from chat_common import protocol
from chat_common.console import (make_parser, port_number, positive_int, positive_seconds,
                                 serve_until_signal, setup_logging)

log = logging.getLogger("tcp_chat.server")

RECV_BYTES = 65536
"""Bytes asked of one ``recv()``: a lot, so a busy sender costs few calls."""

CAN_WRITE_THROUGH = hasattr(socket, "MSG_DONTWAIT")
"""Whether this system can try a send without waiting (not Windows)."""

ACCEPT_POLL_INTERVAL = 0.2
"""Seconds ``accept()`` waits before the accept thread checks for stop()."""


class Outbox:
    """Bounded queue of bytes waiting to be sent to one connection.

    The receiving threads of all members :meth:`put` into it; the
    connection's own sender thread :meth:`take_all`.  Taking *everything*
    queued at once turns a burst of lines into one ``sendall()``.

    Write-through: when nothing is queued and the sender thread is idle,
    :meth:`put` first offers the data to the socket with a non-blocking
    ``send()``; only what the socket does not take at once is queued.  A
    reader who keeps up then costs no thread switch at all, and one who
    does not fills his queue exactly as before.  It is switched on with
    :attr:`write_through` once the socket has no timeout (see
    :meth:`Connection._read_until_closed`), and only where the system has
    ``MSG_DONTWAIT`` (not on Windows, which always queues).

    ``sock``: the connection's socket; ``limit``: most lines that may wait
    (int), ``max_bytes``: most bytes (int); see ``config.SEND_QUEUE_LIMIT``
    and ``config.SEND_QUEUE_BYTES``.
    """

    def __init__(self, sock, limit, max_bytes=config.SEND_QUEUE_BYTES):
        self.limit = limit
        self.max_bytes = max_bytes
        self.write_through = False
        self._sock = sock
        self._chunks = []
        self._lines = 0
        self._bytes = 0
        self._closed = False
        self._sending = False  # the sender thread is inside sendall()
        self._changed = threading.Condition()

    def put(self, data, lines=1):
        """Queue ``data`` (bytes holding ``lines`` whole lines) without blocking.

        Returns False if the queue would hold more than ``limit`` lines or
        ``max_bytes`` bytes: the reader is too slow, the outbox closes itself
        and the caller must drop the connection.  Data put after
        :meth:`close` is ignored (True).
        """
        with self._changed:
            if self._closed:
                return True
            if self.write_through and not self._chunks and not self._sending:
                # Nothing can be ahead of these bytes, so writing them now
                # keeps the order.
                data = self._write_now(data)
                if not data:
                    return True
            if self._lines + lines > self.limit or self._bytes + len(data) > self.max_bytes:
                self._closed = True
                self._chunks.clear()
                self._changed.notify()
                return False
            self._chunks.append(data)
            self._lines += lines
            self._bytes += len(data)
            if len(self._chunks) == 1:
                self._changed.notify()  # the sender waits only on an empty outbox
            return True

    def _write_now(self, data):
        """Send what the socket takes without waiting; return the rest."""
        try:
            sent = self._sock.send(data, socket.MSG_DONTWAIT)
        except OSError:
            # Full (BlockingIOError) or broken: queue it; the sender thread
            # waits for room, or meets the error and ends the connection.
            return data
        return data[sent:]

    def take_all(self):
        """Wait for queued data and return all of it as one ``bytes``.

        Called by the sender thread, which sends the result before calling
        again; until then :meth:`put` queues rather than writes through.
        Returns ``None`` once the outbox is closed and empty.
        """
        with self._changed:
            self._sending = False
            while not self._chunks and not self._closed:
                self._changed.wait()
            if not self._chunks:
                return None
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._lines = 0
            self._bytes = 0
            self._sending = True
            return data

    def close(self):
        """Accept no more data; the sender still sends what is queued."""
        with self._changed:
            self._closed = True
            self._changed.notify()


class Batch:
    """Lines for many connections, gathered under the lock, queued once each.

    A burst of public messages from one ``recv()`` goes to the same
    recipients, so consecutive lines with the same addressing form a *run*:
    the run is encoded and joined once, and every recipient gets the same
    bytes object.  That costs one queue operation per member per ``recv()``
    instead of one per line per member, and each member still gets its lines
    in the order the server accepted them.

    ``room``: the :class:`~chat_common.protocol.ChatRoom` that resolves
    recipients; it must not change membership between :meth:`add` and
    :meth:`queue` except through the deliveries added (the caller holds the
    server's lock throughout).
    """

    def __init__(self, room):
        self._room = room
        self._per_connection = {}  # Connection -> [bytes, ...] in order
        self._line_counts = {}  # Connection -> lines in those bytes
        self._run = []  # lines (str) of the current run
        self._run_delivery = None  # a delivery with the run's addressing

    def add(self, deliveries):
        """Add :class:`~chat_common.protocol.Delivery` objects, in order."""
        for delivery in deliveries:
            current = self._run_delivery
            if current is None or (delivery.to, delivery.exclude) != (current.to, current.exclude):
                self._end_run()
                self._run_delivery = delivery
            self._run.append(delivery.line)

    def _end_run(self):
        if not self._run:
            return
        text = "\n".join(self._run)
        data = protocol.encode_line(text)  # encoded once, whatever the number of recipients
        lines = text.count("\n") + 1
        for conn in self._room.recipients(self._run_delivery):
            self._per_connection.setdefault(conn, []).append(data)
            self._line_counts[conn] = self._line_counts.get(conn, 0) + lines
        self._run = []

    def queue(self):
        """Put everything into the outboxes; drop readers whose outbox overflows."""
        self._end_run()
        for conn, chunks in self._per_connection.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if not conn.outbox.put(data, self._line_counts[conn]):
                conn.abort(protocol.SLOW_READER_REASON)


class Connection:
    """One client connection: its socket, outbox, framer and two threads.

    The receiver thread owns the connection's life: when it ends (EOF,
    error, ``/quit``, name timeout or server stop) it removes the member,
    lets the sender flush, and closes the socket.
    """

    def __init__(self, server, sock, address):
        self.server = server
        self.sock = sock
        self.address = address
        self.outbox = Outbox(sock, server.send_queue_limit, server.send_queue_bytes)
        self.framer = protocol.LineFramer(server.max_message_bytes)
        self.drop_reason = None  # set by whoever aborts the connection
        self.name = None  # set on joining, for the log
        label = f"{address[0]}:{address[1]}"
        self.label = label
        self.receiver = threading.Thread(
            target=self._receive_loop, name=f"recv {label}", daemon=True
        )
        self.sender = threading.Thread(target=self._send_loop, name=f"send {label}", daemon=True)

    def start(self):
        """Start the sender and receiver threads."""
        self.sender.start()
        self.receiver.start()

    def abort(self, reason=None):
        """Break the connection from any thread; its receiver will clean up.

        ``shutdown()`` wakes both threads of this connection: a blocked
        ``recv()`` returns EOF and a blocked ``sendall()`` fails.
        """
        if reason and self.drop_reason is None:
            self.drop_reason = reason
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never fully connected

    # Receiver thread -------------------------------------------------------
    def _receive_loop(self):
        cause = "соединение закрыто клиентом"
        try:
            cause = self._read_until_closed() or self.drop_reason or cause
        except TimeoutError:
            cause = "имя не получено вовремя"
            self.outbox.put(protocol.encode_line(protocol.error_line(
                f"Время на выбор имени истекло ({self.server.name_timeout:g} с)"
            )))
        except OSError as error:
            cause = f"ошибка соединения: {error}"
        finally:
            self.server._drop(self, self.drop_reason)
            self._close(cause)

    def _read_until_closed(self):
        """Read and apply lines until EOF; return a cause string or None."""
        deadline = time.monotonic() + self.server.name_timeout
        joined = False
        while True:
            if not joined:
                joined = self.server._is_member(self)
                if joined:
                    self.sock.settimeout(None)
                    # Only a socket without a timeout makes send(MSG_DONTWAIT)
                    # return at once; with one, Python would wait for room.
                    self.outbox.write_through = CAN_WRITE_THROUGH
                else:
                    # Waiting for a name is bounded; chatting is not.
                    self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            data = self.sock.recv(RECV_BYTES)
            if not data:
                return None
            events = self.framer.feed(data)
            if events and self.server._process(self, events):
                return "выход командой /quit"

    def _close(self, cause):
        self.outbox.close()
        self.sender.join(self.server.flush_timeout)
        self.abort()
        self.sock.close()
        self.server._forget(self, cause)

    # Sender thread ---------------------------------------------------------
    def _send_loop(self):
        while True:
            data = self.outbox.take_all()
            if data is None:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.abort()  # the receiver thread notices and cleans up
                return


class ChatServer:
    """Threaded TCP chat server (see the module docstring).

    ``host``: address to bind (str); ``port``: TCP port, 0 for any free one.
    Keyword limits default to :mod:`chat_common.config`:
    ``max_clients`` (open connections), ``name_timeout`` (seconds),
    ``send_queue_limit`` (lines per member), ``send_queue_bytes`` (bytes
    per member), ``max_message_bytes`` (bytes),
    ``flush_timeout`` (seconds given to queued lines at stop),
    ``backlog`` (connections the kernel holds before ``accept()``).

    The socket is bound in the constructor (``OSError`` if the address is
    taken), so :attr:`address` is known at once: a ``(host, port)`` tuple.
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        host=config.HOST,
        port=config.TCP_PORT,
        *,
        max_clients=config.MAX_CLIENTS,
        name_timeout=config.NAME_TIMEOUT,
        send_queue_limit=config.SEND_QUEUE_LIMIT,
        send_queue_bytes=config.SEND_QUEUE_BYTES,
        max_message_bytes=config.MAX_MESSAGE_BYTES,
        flush_timeout=config.SHUTDOWN_FLUSH_TIMEOUT,
        backlog=config.BACKLOG,
    ):
        self.max_clients = max_clients
        self.name_timeout = name_timeout
        self.send_queue_limit = send_queue_limit
        self.send_queue_bytes = send_queue_bytes
        self.max_message_bytes = max_message_bytes
        self.flush_timeout = flush_timeout
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # create_server sets SO_REUSEADDR (not on Windows, where it would let
        # another program steal the port), so a restart can bind at once.
        self._listener = socket.create_server((host, port), family=family, backlog=backlog)
        self._listener.settimeout(ACCEPT_POLL_INTERVAL)
        self.address = self._listener.getsockname()[:2]
        self._room = protocol.ChatRoom()
        self._connections = set()
        self._lock = threading.Lock()  # guards _room and _connections
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept", daemon=True)

    # Life cycle -----------------------------------------------------------
    def start(self):
        """Start the accept thread; returns at once."""
        log.info("Сервер TCP слушает %s:%s", *self.address)
        self._accept_thread.start()

    def stop(self):
        """Tell every member, flush their queues (bounded), close, join threads.

        Safe to call more than once and from any thread.
        """
        if self._stopping.is_set():
            self._stopped.wait()
            return
        self._stopping.set()
        if self._accept_thread.is_alive():
            self._accept_thread.join()
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.outbox.put(protocol.encode_line(protocol.SHUTDOWN_NOTICE))
            conn.outbox.close()
        deadline = time.monotonic() + self.flush_timeout
        for conn in connections:
            conn.sender.join(max(deadline - time.monotonic(), 0))
        for conn in connections:
            conn.abort("сервер остановлен")
        for conn in connections:
            conn.receiver.join()
        log.info("Сервер остановлен")
        self._stopped.set()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def member_count(self):
        """Members who have joined (int)."""
        with self._lock:
            return len(self._room)

    # Accept thread --------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except TimeoutError:
                continue  # a chance to notice stop()
            except OSError as error:
                # For example EMFILE (out of file descriptors): wait a little
                # instead of spinning, and keep serving those who are in.
                log.warning("accept() не удался: %s", error)
                self._stopping.wait(ACCEPT_POLL_INTERVAL)
                continue
            self._open(sock, address)

    def _open(self, sock, address):
        # Writes are already batched per member, so Nagle's algorithm would
        # only add delay (about 40 ms with delayed ACKs).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            full = len(self._connections) >= self.max_clients
            if not full:
                conn = Connection(self, sock, address)
                self._connections.add(conn)
        if full:
            self._refuse(sock, address)
            return
        log.info("Подключение %s:%s", *address[:2])
        conn.outbox.put(protocol.encode_line(protocol.NAME_PROMPT))
        conn.start()

    def _refuse(self, sock, address):
        log.warning("Отказ %s:%s: сервер переполнен", *address[:2])
        line = protocol.error_line(
            f"Сервер переполнен ({self.max_clients} подключений), попробуйте позже"
        )
        try:
            sock.settimeout(1.0)
            sock.sendall(protocol.encode_line(line))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    # Called by connection threads ---------------------------------------------
    def _is_member(self, conn):
        with self._lock:
            return conn in self._room

    def _process(self, conn, events):
        """Apply framer events of ``conn``; queue what they cause.

        Returns True if the connection must close (``/quit``).  The rules run
        under the lock, so all members get lines in one order.
        """
        items = protocol.decode_lines(events, self.max_message_bytes)
        batch = Batch(self._room)
        quit_unnamed = False
        with self._lock:
            if conn not in self._room:
                items, quit_unnamed = self._handshake(conn, items, batch)
            outcome = self._room.handle_many(conn, items) if items else protocol.Outcome()
            batch.add(outcome.deliveries)
            batch.queue()
        if log.isEnabledFor(logging.DEBUG):
            for item in items:
                log.debug("%s: %s", conn.name, item)
        return outcome.close or quit_unnamed

    def _handshake(self, conn, items, batch):
        """Take the name from the first valid item.

        Returns ``(items after the name, quit)``.  Until a name is accepted,
        every refused line gets its error and the prompt again; ``/quit``
        instead of a name gets the goodbye and ``quit`` is True, so ``nc``
        users (and a piped client whose input ended) can leave at the prompt.
        """
        for index, item in enumerate(items):
            if isinstance(item, str) and protocol.split_command(item.strip())[0] == "/quit":
                batch.add([protocol.Delivery(f"{protocol.GOODBYE_PREFIX}!", to=(conn,))])
                return [], True
            if isinstance(item, str):
                try:
                    batch.add(self._room.join(conn, item))
                except protocol.NameRefused as error:
                    item = error
                else:
                    conn.name = self._room.name_of(conn)
                    log.info("Вход в чат: %s (%s)", conn.name, conn.label)
                    return items[index + 1:], False
            batch.add([
                protocol.Delivery(protocol.error_line(str(item)), to=(conn,)),
                protocol.Delivery(protocol.NAME_PROMPT, to=(conn,)),
            ])
        return [], False

    def _drop(self, conn, reason=None):
        """Remove ``conn`` from the room (if joined) and tell the others once."""
        with self._lock:
            if conn not in self._room:
                return
            batch = Batch(self._room)
            batch.add(self._room.leave(conn, reason))
            batch.queue()

    def _forget(self, conn, cause):
        with self._lock:
            self._connections.discard(conn)
        who = f"{conn.name} ({conn.label})" if conn.name else conn.label
        log.info("Отключение %s: %s", who, cause)


# --- Command line ----------------------------------------------------------
def build_parser():
    """The argument parser of ``python -m tcp_chat.server`` (help in Russian)."""
    parser, options = make_parser(
        "python -m tcp_chat.server",
        "Многопользовательский чат: сервер TCP. Остановка — Ctrl+C.",
    )
    options.add_argument("--host", default=config.HOST, metavar="АДРЕС",
                        help=f"адрес, на котором слушать (по умолчанию {config.HOST}; "
                             "0.0.0.0 — все сетевые интерфейсы)")
    options.add_argument("--port", type=port_number, default=config.TCP_PORT, metavar="ПОРТ",
                        help=f"порт TCP (по умолчанию {config.TCP_PORT}; 0 — любой свободный)")
    options.add_argument("--max-clients", type=positive_int, default=config.MAX_CLIENTS, metavar="N",
                        help=f"наибольшее число подключений (по умолчанию {config.MAX_CLIENTS})")
    options.add_argument("--name-timeout", type=positive_seconds, default=config.NAME_TIMEOUT,
                        metavar="СЕКУНДЫ",
                        help=f"сколько секунд ждать имя нового клиента "
                             f"(по умолчанию {config.NAME_TIMEOUT:g})")
    options.add_argument("--send-queue-limit", type=positive_int, default=config.SEND_QUEUE_LIMIT,
                        metavar="СТРОКИ",
                        help=f"сколько строк может ждать отправки одному клиенту, прежде чем "
                             f"его отключат как не успевающего (по умолчанию {config.SEND_QUEUE_LIMIT})")
    options.add_argument("--send-queue-bytes", type=positive_int, default=config.SEND_QUEUE_BYTES,
                        metavar="БАЙТЫ",
                        help=f"то же ограничение в байтах (по умолчанию {config.SEND_QUEUE_BYTES})")
    options.add_argument("--max-message-bytes", type=positive_int, default=config.MAX_MESSAGE_BYTES,
                        metavar="БАЙТЫ",
                        help=f"наибольшая длина сообщения в байтах без конца строки "
                             f"(по умолчанию {config.MAX_MESSAGE_BYTES})")
    options.add_argument("--flush-timeout", type=positive_seconds, default=config.SHUTDOWN_FLUSH_TIMEOUT,
                        metavar="СЕКУНДЫ",
                        help=f"сколько секунд при остановке дослать очереди "
                             f"(по умолчанию {config.SHUTDOWN_FLUSH_TIMEOUT:g})")
    options.add_argument("--backlog", type=positive_int, default=config.BACKLOG, metavar="N",
                        help=f"очередь ещё не принятых подключений в ядре "
                             f"(по умолчанию {config.BACKLOG})")
    options.add_argument("-v", "--verbose", action="store_true",
                        help="подробный журнал, включая текст сообщений")
    return parser


def main(argv=None):
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        server = ChatServer(
            args.host, args.port,
            max_clients=args.max_clients,
            name_timeout=args.name_timeout,
            send_queue_limit=args.send_queue_limit,
            send_queue_bytes=args.send_queue_bytes,
            max_message_bytes=args.max_message_bytes,
            flush_timeout=args.flush_timeout,
            backlog=args.backlog,
        )
    except OSError as error:
        print(f"Не удалось открыть порт {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return serve_until_signal(server, log)


if __name__ == "__main__":
    sys.exit(main())
