"""Multi-user UDP chat server: one socket, one thread, datagrams.

Compare with ``tcp_chat/server.py``: the chat rules are the same
(:class:`~chat_common.protocol.ChatRoom`), only the transport differs.

* No connections: a member is known by the ``(host, port)`` address its
  datagrams come from.  Joining is the datagram ``/join NAME``.
* No framing: one datagram is one message, so nothing has to be cut into lines.
* No EOF: a client that vanishes says nothing, so clients send ``/ping``
  heartbeats and the server removes members silent for longer than
  ``client_timeout``.
* No threads per member: ``sendto()`` on a datagram socket does not wait for
  the receiver, so one thread can receive, apply the rules and send.

Run: ``python -m udp_chat.server --port 5051``; stop with Ctrl+C.
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

log = logging.getLogger("udp_chat.server")

RECV_BYTES = 65535
"""Receive buffer in bytes: room for any UDP datagram, so an oversized one
arrives whole and is refused with an error, never silently truncated (Linux
truncates to the buffer, Windows raises and loses the sender's address)."""

MAX_POLL_INTERVAL = 0.5
"""Longest wait in ``recvfrom()`` before the server checks for silent members
and for stop(), in seconds."""


class ChatServer:
    """Single-threaded UDP chat server (see the module docstring).

    ``host``: address to bind (str); ``port``: UDP port, 0 for any free one.
    Keywords default to :mod:`chat_common.config`: ``client_timeout``
    (seconds of silence before a member is removed), ``max_message_bytes``
    (bytes per datagram, without the line ending).

    The socket is bound in the constructor (``OSError`` if the address is
    taken), so :attr:`address` is known at once: a ``(host, port)`` tuple.
    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        host=config.HOST,
        port=config.UDP_PORT,
        *,
        client_timeout=config.CLIENT_TIMEOUT,
        max_message_bytes=config.MAX_MESSAGE_BYTES,
    ):
        self.client_timeout = client_timeout
        self.max_message_bytes = max_message_bytes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        # The timeout bounds how late a silent member or stop() is noticed.
        self._sock.settimeout(min(MAX_POLL_INTERVAL, client_timeout / 4))
        self.address = self._sock.getsockname()[:2]
        self._room = protocol.ChatRoom()
        self._last_seen = {}  # member address -> time.monotonic() of its last datagram
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="udp server", daemon=True)

    # Life cycle -----------------------------------------------------------
    def start(self):
        """Start the server thread; returns at once."""
        log.info("Сервер UDP слушает %s:%s", *self.address)
        self._thread.start()

    def stop(self):
        """Tell every member the server is stopping, close the socket, join the
        thread.  Safe to call more than once and from any thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._stopped.is_set():
            self._sock.close()
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
        return len(self._room)

    # Server thread --------------------------------------------------------
    def _serve(self):
        while not self._stopping.is_set():
            try:
                data, address = self._sock.recvfrom(RECV_BYTES)
            except TimeoutError:
                pass
            except OSError as error:
                # Windows reports an earlier datagram's "port unreachable" here
                # (ConnectionResetError); no error of one peer stops the server.
                log.debug("recvfrom: %s", error)
            else:
                self._handle(data, address)
            self._remove_silent_members()
        self._send(protocol.Delivery(protocol.SHUTDOWN_NOTICE))

    def _handle(self, data, address):
        """Apply one datagram from ``address``."""
        if address in self._room:
            # Any datagram, even a refused one, shows the member is alive.
            self._last_seen[address] = time.monotonic()
        try:
            text = protocol.decode_message(data, self.max_message_bytes)
        except protocol.MessageRefused as error:
            self._reply(address, protocol.error_line(str(error)))
            return
        if address in self._room:
            self._handle_member(address, text)
        else:
            self._handle_stranger(address, text)

    def _handle_member(self, address, text):
        word, _ = protocol.split_command(text)
        if word == protocol.PING_COMMAND:
            return  # a heartbeat only refreshes _last_seen
        name = self._room.name_of(address)
        if word == protocol.JOIN_COMMAND:
            self._reply(address, protocol.error_line(protocol.already_joined_text(name)))
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s", name, text)
        outcome = self._room.handle(address, text)
        self._send(*outcome.deliveries)
        if outcome.close:
            del self._last_seen[address]
            log.info("Выход из чата: %s, команда /quit (%s:%s)", name, *address[:2])

    def _handle_stranger(self, address, text):
        """A datagram from an address that has not joined: only ``/join`` counts.

        Whatever happens, a stranger gets exactly one datagram back, so a
        forged sender address cannot turn the server into an amplifier.
        """
        word, name = protocol.split_command(text)
        if word != protocol.JOIN_COMMAND:
            self._reply(address, protocol.JOIN_FIRST)
            return
        try:
            deliveries = self._room.join(address, name)
        except protocol.NameRefused as error:
            self._reply(address, protocol.error_line(str(error)))
            return
        self._last_seen[address] = time.monotonic()
        log.info("Вход в чат: %s (%s:%s)", self._room.name_of(address), *address[:2])
        self._send(*deliveries)

    def _remove_silent_members(self):
        deadline = time.monotonic() - self.client_timeout
        for address, seen in list(self._last_seen.items()):
            if seen < deadline:
                del self._last_seen[address]
                log.info("Выход из чата: %s, нет сигналов присутствия", self._room.name_of(address))
                self._send(*self._room.leave(address, protocol.SILENT_REASON))

    # Sending ---------------------------------------------------------------
    def _reply(self, address, line):
        """Send one error or notice to ``address``, at most
        ``config.MAX_ERROR_DATAGRAM_BYTES`` bytes (cut at a letter boundary)."""
        data = protocol.encode_line(line)
        if len(data) > config.MAX_ERROR_DATAGRAM_BYTES:
            cut = data[: config.MAX_ERROR_DATAGRAM_BYTES - 1]
            data = cut.decode(config.ENCODING, errors="ignore").encode(config.ENCODING) + b"\n"
        self._sendto(data, address)

    def _send(self, *deliveries):
        for delivery in deliveries:
            data = protocol.encode_line(delivery.line)
            for address in self._room.recipients(delivery):
                self._sendto(data, address)

    def _sendto(self, data, address):
        try:
            self._sock.sendto(data, address)
        except OSError as error:
            # For example a /users answer too big for one datagram: that
            # member misses one line, the server goes on.
            log.warning("Не удалось отправить %s:%s: %s", address[0], address[1], error)


# --- Command line ----------------------------------------------------------
def build_parser():
    """The argument parser of ``python -m udp_chat.server`` (help in Russian)."""
    parser, options = make_parser(
        "python -m udp_chat.server",
        "Многопользовательский чат: сервер UDP. Остановка — Ctrl+C.",
    )
    options.add_argument("--host", default=config.HOST, metavar="АДРЕС",
                        help=f"адрес, на котором слушать (по умолчанию {config.HOST}; "
                             "0.0.0.0 — все сетевые интерфейсы)")
    options.add_argument("--port", type=port_number, default=config.UDP_PORT, metavar="ПОРТ",
                        help=f"порт UDP (по умолчанию {config.UDP_PORT}; 0 — любой свободный)")
    options.add_argument("--client-timeout", type=positive_seconds, default=config.CLIENT_TIMEOUT,
                        metavar="СЕКУНДЫ",
                        help=f"через сколько секунд тишины участник считается ушедшим "
                             f"(по умолчанию {config.CLIENT_TIMEOUT:g})")
    options.add_argument("--max-message-bytes", type=positive_int, default=config.MAX_MESSAGE_BYTES,
                        metavar="БАЙТЫ",
                        help=f"наибольшая длина датаграммы в байтах без конца строки "
                             f"(по умолчанию {config.MAX_MESSAGE_BYTES})")
    options.add_argument("-v", "--verbose", action="store_true",
                        help="подробный журнал, включая текст сообщений")
    return parser


def main(argv=None):
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        server = ChatServer(args.host, args.port, client_timeout=args.client_timeout,
                            max_message_bytes=args.max_message_bytes)
    except OSError as error:
        print(f"Не удалось открыть порт {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return serve_until_signal(server, log)


if __name__ == "__main__":
    sys.exit(main())
