"""UDP chat client: a receiver thread prints, a heartbeat thread pings, the
main thread sends what the user types.

Run: ``python -m udp_chat.client --name Вася``.  Also usable as a library,
with the same interface as ``tcp_chat.client.ChatClient``::

    with ChatClient("127.0.0.1", 5051, "Вася") as client:
        client.send("привет")
        print(client.lines.get(timeout=1))
"""

import queue
import socket
import sys
import threading

from chat_common import cli, config, protocol
from chat_common.console import Console

RECV_BYTES = 65535  # any UDP datagram fits
# Largest UDP payload over IPv4 (65535 - 8 bytes of UDP - 20 of IP): a longer
# message cannot be one datagram at all, so the client refuses it itself.
MAX_DATAGRAM_BYTES = 65507
# Lines after which the server no longer counts us as a member: it is
# stopping, or it removed us after a silence (the machine slept, say).
_FORGOTTEN = (protocol.SHUTDOWN_NOTICE, protocol.JOIN_FIRST)


class ChatClient:
    """A member of the UDP chat.

    ``host`` (str), ``port`` (int): the server; ``name`` (str): sent as
    ``/join NAME``; the constructor returns once the server welcomed us, and
    :attr:`welcome` holds that line.  ``on_line(line)`` gets each later line
    (``str``) in the receiver thread; without it lines go to the
    ``queue.Queue`` at :attr:`lines`.  ``on_close()``, if given, is called in
    the receiver thread when the chat ends (goodbye, server stopping or
    unreachable); :attr:`closed` (``threading.Event``) is set then.
    ``heartbeat``: seconds between ``/ping`` datagrams; ``timeout``: seconds
    to wait for the answer to ``/join``.

    The socket is *connected* to the server: it only accepts the server's
    datagrams, and an ICMP "port unreachable" comes back as an error.  Raises
    ``ConnectionRefusedError`` (Windows: ``ConnectionResetError``) if nothing
    listens on the port, ``TimeoutError`` if no answer to ``/join`` comes in
    ``timeout`` seconds, :class:`~chat_common.protocol.NameRefused` if the
    server refuses the name.
    """

    def __init__(self, host, port, name, on_line=None, *, on_close=None,
                 heartbeat=config.HEARTBEAT_INTERVAL, timeout=config.JOIN_TIMEOUT):
        self.lines = queue.Queue()
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
        self._receiver = threading.Thread(target=self._receive_loop, daemon=True)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        self._receiver.start()
        self._heartbeat.start()

    def _join(self, name, timeout):
        self.sock.settimeout(timeout)
        self._send_datagram(f"{protocol.JOIN_COMMAND} {name}")
        answer = self._receive_line()
        self.sock.settimeout(None)
        if answer.startswith(protocol.ERROR_PREFIX):
            raise protocol.NameRefused(answer[len(protocol.ERROR_PREFIX):])
        return answer

    def _receive_line(self):
        data = self.sock.recv(RECV_BYTES)
        return data.decode(config.ENCODING, errors="replace").rstrip("\r\n")

    # Threads -------------------------------------------------------------
    def _receive_loop(self):
        try:
            while True:
                line = self._receive_line()
                if not line and self._stop_heartbeat.is_set():
                    break  # close() shut the socket down
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
        # UDP has no connection to notice our death: silence is the only
        # sign, so we break the silence on a timer.
        while not self._stop_heartbeat.wait(self.heartbeat):
            try:
                self._send_datagram(protocol.PING_COMMAND)
            except OSError:
                return  # the receiver thread reports the lost server

    # Sending -------------------------------------------------------------
    def _send_datagram(self, text):
        self.sock.send(text.encode(config.ENCODING))

    def send(self, text):
        """Send one message or command (``str``) as one datagram.

        Raises ``ValueError`` if ``text`` holds a newline (one datagram is
        one message), :class:`~chat_common.protocol.MessageRefused` if it is
        longer than :data:`MAX_DATAGRAM_BYTES` bytes in UTF-8 (the server
        refuses anything over its own, smaller limit with an error line), and
        ``OSError`` if the server is unreachable.
        """
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
            try:
                self._send_datagram("/quit")
            except OSError:
                pass
            self.closed.wait(timeout)
        self._stop_heartbeat.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a receiver still in recv()
        except OSError:
            pass
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
                              on_close=console.connection_closed, heartbeat=args.heartbeat)
        except protocol.NameRefused as error:
            print(protocol.error_line(str(error)), file=sys.stderr)
            name = None


def build_parser():
    """The command line of ``python -m udp_chat.client``."""
    return cli.build_parser("udp", cli.CLIENT)


def main(argv=None):
    """Run the interactive client; return the exit code (0 or 1)."""
    args = build_parser().parse_args(argv)
    console = Console()
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
