"""Every default of the chat in one place.

Both variants (tcp_chat and udp_chat), the tests, the benchmarks and the
notebooks import these values; nothing else hard-codes them.  Command-line
flags of the servers and clients override them per run.
"""

from dataclasses import dataclass

# --- Addresses -------------------------------------------------------------
HOST = "127.0.0.1"
"""Default address: loopback, so a student's chat is not reachable from the
network by accident.  Use ``--host 0.0.0.0`` to accept other machines."""

TCP_PORT = 5050
"""Default port of the TCP server."""

UDP_PORT = 5051
"""Default port of the UDP server (a different port, so both run at once)."""

# --- Text and framing ------------------------------------------------------
ENCODING = "utf-8"
"""Encoding of every line on the wire, both directions."""

MAX_MESSAGE_BYTES = 4096
"""Longest accepted message in bytes, counted without the line ending.

TCP: a longer line is discarded up to the next newline.  UDP: a longer
datagram is refused.  Either way the sender gets an error line."""

MAX_NAME_CHARS = 32
"""Longest user name in characters (not bytes)."""

# --- TCP server limits -----------------------------------------------------
NAME_TIMEOUT = 60.0
"""Seconds a new TCP connection has to give a valid name before it is closed."""

SEND_QUEUE_LIMIT = 100000
"""Lines that may wait in one member's outgoing queue (beyond what the
kernel's socket buffers already hold).

A member whose queue grows past this, or past SEND_QUEUE_BYTES, is a reader
too slow to keep up (or one that stopped reading); it is disconnected so that
nobody else waits.  Both limits are generous because a healthy reader may
fall behind for a moment: in a flood of 100 000 short lines measured with
``benchmarks.chat_bench --scenario slow-reader``, 1 MiB still dropped
readers that were reading, 4 MiB did not."""

SEND_QUEUE_BYTES = 4 * 1024 * 1024
"""Bytes that may wait in one member's outgoing queue: the memory bound
per member (the line limit alone would allow 400 MB of 4 KB lines)."""

MAX_CLIENTS = 1000
"""Most open TCP connections at once, named or not: a connection that has not
given a name yet holds a place too, for at most NAME_TIMEOUT seconds."""

MAX_NAME_ATTEMPTS = 10
"""Refused names in a row after which a TCP connection is closed: each
refusal costs an error and a new prompt, so they must not go on forever."""

BACKLOG = 128
"""Backlog of the listening socket: connections the kernel may hold before
``accept()`` takes them."""

SHUTDOWN_FLUSH_TIMEOUT = 2.0
"""Seconds the server gives queued lines to reach members when it stops."""

# --- UDP liveness ----------------------------------------------------------
HEARTBEAT_INTERVAL = 5.0
"""Seconds between two ``/ping`` heartbeats of a UDP client."""

CLIENT_TIMEOUT = 15.0
"""Seconds of silence after which the UDP server removes a member
(three missed heartbeats)."""

JOIN_TIMEOUT = 3.0
"""Seconds a UDP client waits for the answer to ``/join``."""

MAX_MEMBERS = 1000
"""Most members of the UDP chat at once (as MAX_CLIENTS for TCP): a ``/join``
beyond it is refused."""

MAX_FIRST_REPLY_BYTES = 512
"""Largest datagram the UDP server sends to an address in answer to that
address's first datagram (an error or the welcome), so that a forged sender
address cannot use the server as an amplifier.  The full member list comes
with ``/users`` once joined."""

MAX_REPLY_BYTES = 65000
"""Longest line the server builds from a list of names (welcome, ``/users``,
leave notices), in bytes with its ``\\n``: a longer list is shortened with
"… и ещё N", so every reply fits in one UDP datagram (65 507 bytes at most)."""

# --- Clients ---------------------------------------------------------------
CLOSE_WAIT_TIMEOUT = 5.0
"""Seconds a client waits for the server to answer ``/quit`` before leaving."""


# --- The limits of one server, as its keyword arguments ---------------------
@dataclass(frozen=True)
class TcpLimits:
    """Keyword arguments of ``tcp_chat.server.ChatServer`` and the options of
    the same names (``max_clients`` is ``--max-clients``); units as above."""

    max_clients: int = MAX_CLIENTS
    name_timeout: float = NAME_TIMEOUT
    send_queue_limit: int = SEND_QUEUE_LIMIT
    send_queue_bytes: int = SEND_QUEUE_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES
    flush_timeout: float = SHUTDOWN_FLUSH_TIMEOUT
    backlog: int = BACKLOG


@dataclass(frozen=True)
class UdpLimits:
    """Keyword arguments of ``udp_chat.server.ChatServer`` (see TcpLimits)."""

    client_timeout: float = CLIENT_TIMEOUT
    max_members: int = MAX_MEMBERS
    max_message_bytes: int = MAX_MESSAGE_BYTES
    loss: float = 0.0  # share of received datagrams dropped on purpose (chat_common.loss)
    seed: int = None  # makes those drops repeatable
