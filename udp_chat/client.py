"""UDP chat client (``python -m udp_chat.client --name Вася``): a receiver
thread prints, a heartbeat thread pings, the main thread sends what the user
types.  Also a library with the interface of ``tcp_chat.client.ChatClient``."""

import contextlib
import logging
import queue
import socket
import sys
import threading
import time

from chat_common import cli, config, pinger, protocol
from chat_common.console import Console
from chat_common.loss import InjectedLoss

log = logging.getLogger("udp_chat.client")

RECV_BYTES = 65535  # any UDP datagram fits
JOIN_RETRY_START = 0.5  # seconds to wait for the first answer to /join
MAX_DATAGRAM_BYTES = 65507  # the largest UDP payload over IPv4: 65535 - 8 (UDP) - 20 (IP)
LOST_NOTICE = "*** Сервер недоступен — клиент завершает работу"  # UDP has no connection to lose
_FORGOTTEN = (protocol.SHUTDOWN_NOTICE, protocol.JOIN_FIRST)  # the server stops or forgot us


class ChatClient:
    """A member of the UDP chat: ``host`` (str), ``port`` (int) of the server,
    ``name`` (str), sent as ``/join NAME``; the constructor returns once
    welcomed, with the line in :attr:`welcome`.  As ``tcp_chat``'s client:
    ``on_line(line)`` (or the queue :attr:`lines`), ``on_close()``,
    :attr:`closed`.  ``heartbeat``: seconds between ``/ping`` datagrams;
    ``timeout``: seconds to try ``/join``; ``loss``, ``seed``: see
    :class:`~chat_common.loss.InjectedLoss`.  The socket is *connected*: it
    takes only the server's datagrams, and ICMP "port unreachable" comes back
    as ``ConnectionRefusedError`` (Windows: ``ConnectionResetError``), raised
    as ``TimeoutError`` (no answer) and ``NameRefused`` are."""

    def __init__(self, host, port, name, on_line=None, *, on_close=None,
                 heartbeat=config.HEARTBEAT_INTERVAL, timeout=config.JOIN_TIMEOUT,
                 loss=0.0, seed=None):
        self.lines = queue.Queue()
        self.pongs = queue.Queue()  # answers to the pinger's pings (chat_common.pinger)
        self.loss = InjectedLoss(loss, seed)
        self.closed = threading.Event()
        self.heartbeat = heartbeat
        self._on_line = on_line or self.lines.put
        self._on_close = on_close
        self._stop_heartbeat = threading.Event()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.connect((host, port))
            self.welcome = self._join(name, timeout)
        except BaseException:
            self.sock.close()
            raise
        self._receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat",
                                           daemon=True)
        self._receiver.start()
        self._heartbeat.start()

    def _join(self, name, timeout):
        # A lost /join and a lost answer look the same: silence.  So ask again,
        # waiting twice as long each time (0.5, 1, 2 s …), until ``timeout``.
        deadline, wait = time.monotonic() + timeout, JOIN_RETRY_START
        while True:
            self._send_datagram(f"{protocol.JOIN_COMMAND} {name}")
            self.sock.settimeout(max(min(wait, deadline - time.monotonic()), 0.001))
            try:
                answer = self._receive_line()
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError("сервер не отвечает") from None
                log.info("Нет ответа на /join за %s с — повторяю", f"{wait:g}".replace(".", ","))
                wait *= 2
        self.sock.settimeout(None)
        if answer.startswith(protocol.ERROR_PREFIX):
            raise protocol.NameRefused(answer[len(protocol.ERROR_PREFIX):])
        return answer

    def _receive_line(self):
        while True:
            data = self.sock.recv(RECV_BYTES)
            if not self.loss.drops():
                return data.decode(config.ENCODING, errors="replace").rstrip("\r\n")
            log.debug("Датаграмма потеряна (--loss): %r", data)

    # Threads -------------------------------------------------------------
    def _receive_loop(self):
        try:
            while True:
                line = self._receive_line()
                if not line and self._stop_heartbeat.is_set():
                    break  # close() shut the socket down
                late_welcome = line.startswith(protocol.WELCOME_PREFIX)  # to a resent /join
                if not late_welcome and not pinger.set_aside(line, self.pongs):
                    self._on_line(line)
                if line.startswith(protocol.GOODBYE_PREFIX) or line in _FORGOTTEN:
                    break  # the server has forgotten us: nothing more will come
        except OSError:
            pass  # ConnectionRefusedError: the server is gone; or closed by close()
        finally:
            self._stop_heartbeat.set()
            if self._on_close:
                self._on_close()
            self.closed.set()

    def _heartbeat_loop(self):
        # No connection tells the server we are gone: only silence does, so we break it.
        while not self._stop_heartbeat.wait(self.heartbeat):
            try:
                self._send_datagram(protocol.PING_COMMAND)
            except OSError:
                return  # the receiver thread reports the lost server

    # Sending -------------------------------------------------------------
    def _send_datagram(self, text):
        self.sock.send(text.encode(config.ENCODING))

    def send(self, text):
        """Send one message or command (``str``) as one datagram.  Raises
        ``ValueError`` for a newline (one datagram is one message),
        :class:`~chat_common.protocol.MessageRefused` beyond
        :data:`MAX_DATAGRAM_BYTES` bytes, ``OSError`` if the server is gone."""
        if "\n" in text:
            raise ValueError("one message per send(): text must not contain a newline")
        data = text.encode(config.ENCODING)
        if len(data) > MAX_DATAGRAM_BYTES:
            raise protocol.MessageRefused(f"Сообщение длиннее {MAX_DATAGRAM_BYTES} байт не "
                                          "помещается в одну датаграмму — оно не отправлено")
        self.sock.send(data)

    def close(self, timeout=config.CLOSE_WAIT_TIMEOUT):
        """Say ``/quit``, wait up to ``timeout`` seconds for the goodbye, then
        close the socket and stop both threads.  Safe to call more than once."""
        if not self.closed.is_set():
            with contextlib.suppress(OSError):  # the server may be gone already
                self._send_datagram("/quit")
            self.closed.wait(timeout)
        self._stop_heartbeat.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a receiver still in recv()
        self.sock.close()
        for thread in (self._receiver, self._heartbeat):
            if thread is not threading.current_thread():
                thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def join(args, console):
    """Ask for a name until the server accepts one; return the client or None."""
    name = args.name
    while True:
        if name is None:
            try:
                name = input("Введите имя: ")
            except (EOFError, KeyboardInterrupt):
                return None
        try:
            return ChatClient(args.host, args.port, name, on_line=console.show,
                              on_close=console.connection_closed, heartbeat=args.heartbeat,
                              loss=args.loss, seed=args.seed)
        except protocol.NameRefused as error:
            print(protocol.error_line(str(error)), file=sys.stderr)
            name = None


def build_parser():
    """The command line of ``python -m udp_chat.client``."""
    return cli.build_parser("udp", cli.CLIENT)


def main(argv=None):
    """Run the interactive client; return the exit code (0 or 1)."""
    args = build_parser().parse_args(argv)
    cli.setup_logging(verbose=False)  # the log shows each /join sent again
    console = Console(lost_notice=LOST_NOTICE)
    try:
        client = join(args, console)
    except KeyboardInterrupt:  # Ctrl+C while waiting for the server's answer
        return 1
    except OSError as error:  # TimeoutError is one too
        reason = "сервер не отвечает" if isinstance(error, TimeoutError) else error.strerror
        print(f"Нет связи с сервером UDP {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    if client is None:
        return 1
    console.show(client.welcome)
    return console.run(client)


if __name__ == "__main__":
    sys.exit(main())
