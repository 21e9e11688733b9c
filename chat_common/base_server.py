"""What the TCP and UDP chat servers share, as ``socketserver.BaseServer`` is
shared by its TCP and UDP servers: one :class:`~chat_common.protocol.ChatRoom`
under one lock, one server thread, and how the server starts and stops.

A transport subclass sets :attr:`transport` and :attr:`address`, and writes
three methods: the server thread's loop (given to ``__init__``),
``_send_to(key, data)`` and ``_shut_down()``.
"""

import logging
import threading

from chat_common.protocol import encode_line


class BaseChatServer:
    """Life cycle of a chat server; see the module docstring.

    ``room``: the server's :class:`~chat_common.protocol.ChatRoom`;
    ``loop``: the method the server thread runs until :attr:`_stopping` is set;
    ``name``: that thread's name (``threading.enumerate()`` shows it).
    Use a server as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    transport = "?"  # "TCP" or "UDP", for the log

    def __init__(self, room, loop, name):
        self.log = logging.getLogger(type(self).__module__)  # e.g. "tcp_chat.server"
        self._room = room
        self._lock = threading.Lock()  # guards the room: one order of lines for all
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=loop, name=name, daemon=True)

    def start(self):
        """Start the server thread; returns at once."""
        self.log.info("Сервер %s слушает %s:%s", self.transport, *self.address)
        self._thread.start()

    def stop(self):
        """Stop the server thread, tell the members, close.  Safe to call more
        than once and from any thread; the first call does the work."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self._shut_down()
        self.log.info("Сервер остановлен")

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

    def _deliver(self, deliveries):
        """Send each line to its recipients (the caller holds the lock)."""
        for delivery in deliveries:
            data = encode_line(delivery.line)  # encoded once for all recipients
            for key in self._room.recipients(delivery):
                self._send_to(key, data)
