"""TCP chat client: a receiver thread prints, the main thread sends.

Run: ``python -m tcp_chat.client --name Вася``; type messages, ``/help`` for
commands, ``/quit`` to leave.  Also usable as a library (tests, notebooks)::

    with ChatClient("127.0.0.1", 5050, "Вася") as client:
        client.send("привет")
        print(client.lines.get(timeout=1))
"""

import queue
import socket
import sys
import threading

from chat_common import cli, config, pinger, protocol
from chat_common.console import Console
from chat_common.framing import LINE_TOO_LONG, LineFramer

RECV_BYTES = 65536

MAX_SERVER_LINE_BYTES = 1 << 20
"""Longest line accepted from the server, in bytes: far above a message,
because a ``/users`` answer lists every member."""


class ChatClient:
    """A connection to the TCP chat server.

    ``host`` (str), ``port`` (int): the server.  ``name`` (str or None): with
    a name, the constructor performs the handshake and returns once joined;
    without, the first line sent is taken as the name.

    ``on_line(line)`` gets each incoming line (``str`` without ``\\n``), the
    handshake's included, in the receiver thread; without it lines after the
    handshake go to the ``queue.Queue`` at :attr:`lines`.  ``on_close()``, if
    given, is called in the receiver thread when the connection ends;
    :attr:`closed` (``threading.Event``) is set then.
    ``timeout``: seconds for connecting and for the handshake.

    Raises ``OSError`` (e.g. ``ConnectionRefusedError``) if the server cannot
    be reached; ``ConnectionError`` if it refuses the connection (server
    full) or closes it during the handshake; ``TimeoutError`` if the
    handshake stalls; :class:`~chat_common.protocol.NameRefused` if the name
    is refused.

    After a successful handshake :attr:`handshake` holds the lines it
    received (prompt and welcome).
    """

    def __init__(self, host, port, name=None, on_line=None, *, on_close=None,
                 timeout=config.CLOSE_WAIT_TIMEOUT):
        self.lines = queue.Queue()
        self.pongs = queue.Queue()  # answers to the pinger's pings (chat_common.pinger)
        self.closed = threading.Event()
        self.handshake = []
        self._on_line = on_line or self.lines.put
        self._on_close = on_close
        self._framer = LineFramer(MAX_SERVER_LINE_BYTES)
        self._pending = []  # lines read during the handshake but not yet delivered
        self._send_lock = threading.Lock()  # one sendall at a time: lines never mix
        self.sock = socket.create_connection((host, port), timeout=timeout)
        # Each line is sent at once; without this, Nagle's algorithm would hold
        # a second short line until the first is acknowledged (up to 40 ms).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if name is not None:
                self._join(name)
        except BaseException:
            self.sock.close()
            raise
        if on_line:  # a callback sees every line, so the console shows the handshake
            self._pending[:0] = self.handshake
        self.sock.settimeout(None)
        self._receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        self._receiver.start()

    # Handshake ---------------------------------------------------------------
    def _join(self, name):
        prompt = self._next_line()
        if not prompt.startswith(protocol.NOTICE_PREFIX):
            raise ConnectionError(prompt)  # e.g. "!!! Сервер переполнен"
        self.handshake.append(prompt)
        self.send(name)
        answer = self._next_line()
        if answer.startswith(protocol.ERROR_PREFIX):
            raise protocol.NameRefused(answer[len(protocol.ERROR_PREFIX):])
        self.handshake.append(answer)

    def _next_line(self):
        while not self._pending:
            data = self.sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionError("сервер закрыл соединение")
            self._pending.extend(self._decode(data))
        return self._pending.pop(0)

    def _decode(self, data):
        lines = []
        for event in self._framer.feed(data):
            if event is not LINE_TOO_LONG:
                lines.append(event.decode(config.ENCODING, errors="replace").rstrip("\r"))
        return lines

    # Receiver thread ---------------------------------------------------------
    def _deliver(self, line):
        if not pinger.set_aside(line, self.pongs):
            self._on_line(line)

    def _receive_loop(self):
        try:
            for line in self._pending:
                self._deliver(line)
            self._pending = []
            while True:
                data = self.sock.recv(RECV_BYTES)
                if not data:
                    break
                for line in self._decode(data):
                    self._deliver(line)
        except OSError:
            pass  # reset or closed under us: the connection is over either way
        finally:
            if self._on_close:
                self._on_close()
            self.closed.set()

    # Sending -----------------------------------------------------------------
    def send(self, text):
        """Send one message or command (``str``, without ``\\n``).

        Raises ``ValueError`` if ``text`` holds a newline (it would become
        two messages) and ``OSError`` if the connection is broken.
        """
        if "\n" in text:
            raise ValueError("one message per send(): text must not contain a newline")
        data = protocol.encode_line(text)
        with self._send_lock:
            self.sock.sendall(data)

    def close(self, timeout=config.CLOSE_WAIT_TIMEOUT):
        """Say ``/quit``, wait up to ``timeout`` seconds for the server to
        close, then close the socket.  Safe to call more than once."""
        if not self.closed.is_set():
            try:
                self.send("/quit")
            except OSError:
                pass
            self.closed.wait(timeout)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._receiver.is_alive() and self._receiver is not threading.current_thread():
            self._receiver.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def build_parser():
    """The command line of ``python -m tcp_chat.client``."""
    return cli.build_parser("tcp", cli.CLIENT)


def main(argv=None):
    """Run the interactive client; return the exit code (0 or 1)."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        client = ChatClient(args.host, args.port, args.name, on_line=console.show,
                            on_close=console.connection_closed)
    except KeyboardInterrupt:  # Ctrl+C while connecting
        return 1
    except protocol.NameRefused as error:  # --name was given and refused
        print(protocol.error_line(str(error)), file=sys.stderr)
        return 1
    except OSError as error:
        if str(error).startswith(protocol.ERROR_PREFIX):  # the server refused us (full)
            console.show(str(error))
            console.connection_closed()
        else:
            print(f"Не удалось подключиться к {args.host}:{args.port}: "
                  f"{error.strerror or error}", file=sys.stderr)
        return 1
    return console.run(client)


if __name__ == "__main__":
    sys.exit(main())
