"""Framing: cutting a TCP byte stream into lines (no I/O, like protocol.py).

TCP delivers a stream of bytes, not messages, so the TCP servers and client
need :class:`LineFramer`; UDP does not (one datagram is one message).
"""

from chat_common import config

LINE_TOO_LONG = "LINE_TOO_LONG"
"""Event of :class:`LineFramer`: a line longer than the limit was dropped
(a ``str``, so it never equals a line, which is ``bytes``)."""


class LineFramer:
    """Cut a TCP byte stream into lines ending in ``\\n``.

    TCP delivers a stream, not messages: one ``recv()`` may return half a line,
    several lines, or a line cut inside a multibyte UTF-8 letter.  The framer
    keeps the unfinished tail between calls, so lines come out exactly as they
    were sent.  Splitting on the byte ``\\n`` is safe in UTF-8: that byte never
    occurs inside a multibyte character.

    ``max_line_bytes``: longest line in bytes, not counting ``\\n`` or
    ``\\r\\n``.  A longer line yields one :data:`LINE_TOO_LONG` and is
    discarded up to the next ``\\n``, so the framer never keeps more than
    ``max_line_bytes + 1`` bytes (room for a ``\\r`` waiting for its ``\\n``).
    """

    def __init__(self, max_line_bytes=config.MAX_MESSAGE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._tail = b""
        self._discarding = False  # inside a too-long line, waiting for its \n

    def feed(self, data):
        """Take the next bytes of the stream and return the finished events.

        ``data``: bytes exactly as ``recv()`` returned them.  Returns a list
        whose items are ``bytes`` (one complete line, without ``\\n`` but
        possibly ending in ``\\r``, not yet decoded) or :data:`LINE_TOO_LONG`.
        """
        if self._discarding:  # drop the rest of a too-long line
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._discarding = False
            data = data[newline + 1:]
        else:
            data = self._tail + data
        *lines, self._tail = data.split(b"\n")  # the tail is b"" after a final \n
        events = [LINE_TOO_LONG if len(line.removesuffix(b"\r")) > self.max_line_bytes else line
                  for line in lines]
        if len(self._tail) > self.max_line_bytes + 1:
            events.append(LINE_TOO_LONG)
            self._tail = b""
            self._discarding = True
        return events

    @property
    def buffered(self):
        """Bytes kept from an unfinished line (int)."""
        return len(self._tail)
