"""The pinger of both clients: ``/ping [N]`` typed in a client measures the
round trip to the server, like the classic ``ping`` and the UDP pinger of
Kurose & Ross.

Each ping is the command ``/ping SEQ RUN``; the server answers it with
``*** pong SEQ RUN`` (see ``chat_common.protocol``), so an answer is matched
to its question even when it comes late.  Over UDP a ping or its answer may
be lost; over TCP the kernel retransmits, and loss only shows as delay.
"""

import queue
import re
import time

from chat_common import protocol
from chat_common.text import number

DEFAULT_COUNT = 10
MAX_COUNT = 100
INTERVAL = 1.0  # seconds between two pings
TIMEOUT = 1.0  # seconds a ping waits for its answer before it counts as lost


def parse_count(text):
    """The N of a typed ``/ping [N]`` (int, ``DEFAULT_COUNT`` without one).
    Raises :class:`~chat_common.protocol.ProtocolError` with a Russian reason
    if N is not a whole number from 1 to ``MAX_COUNT``."""
    rest = protocol.split_command(text.strip())[1].strip()
    if not rest:
        return DEFAULT_COUNT
    if not rest.isdecimal() or not 1 <= int(rest) <= MAX_COUNT:
        raise protocol.ProtocolError(f"Формат: /ping [N], N — от 1 до {MAX_COUNT}")
    return int(rest)


def ping(client, count, show, interval=INTERVAL, timeout=TIMEOUT):
    """Send ``count`` pings through ``client`` and ``show`` (a function of one
    ``str``) a line per ping and a summary; return the round trips in
    seconds (list of float; a lost ping has none).

    ``client`` needs ``send(text)`` and ``pongs``, a ``queue.Queue`` of the
    answer lines its receiver thread set aside.  Chat lines keep arriving
    meanwhile: the receiver thread shows them.
    """
    run = time.monotonic_ns() % 1_000_000  # tells this run's answers from older ones
    round_trips = []
    for seq in range(1, count + 1):
        started = time.monotonic()
        client.send(f"{protocol.PING_COMMAND} {seq} {run}")
        if _wait_for(client.pongs, f"{protocol.PONG} {seq} {run}", started + timeout):
            round_trips.append(time.monotonic() - started)
            show(f"пинг {seq}: {milliseconds(round_trips[-1])} мс")
        else:
            show(f"пинг {seq}: потерян")
        if seq < count:
            time.sleep(max(started + interval - time.monotonic(), 0))
    show(summary(count, round_trips))
    return round_trips


def _wait_for(pongs, expected, deadline):
    while (left := deadline - time.monotonic()) > 0:
        try:
            if pongs.get(timeout=left) == expected:
                return True
        except queue.Empty:
            return False
    return False


def milliseconds(seconds):
    """Seconds (float) as milliseconds with a decimal comma: ``0,42``."""
    return f"{seconds * 1000:.2f}".replace(".", ",")


def summary(sent, round_trips):
    """The closing line of a run: sent, received, loss %, min/avg/max RTT."""
    received = len(round_trips)
    line = (f"--- отправлено {number(sent)}, получено {number(received)}, "
            f"потеряно {round(100 * (sent - received) / sent)} %")
    if round_trips:
        rtt = "/".join(milliseconds(value) for value in
                       (min(round_trips), sum(round_trips) / received, max(round_trips)))
        line += f"; RTT мин/сред/макс = {rtt} мс"
    return line


# The heartbeat's bare "*** pong" or the pinger's "*** pong SEQ RUN"; a join
# notice of a member named "pong" ("*** pong входит в чат") is neither.
_ANSWER = re.compile(re.escape(protocol.PONG) + r"( \d+ \d+)?")


def set_aside(line, pongs):
    """Whether ``line`` (str) answers one of our pings rather than belonging
    to the chat.  The pinger's answers go to ``pongs`` (``queue.Queue``); the
    bare answer to a heartbeat is dropped."""
    if not _ANSWER.fullmatch(line):
        return False
    if line != protocol.PONG:
        pongs.put(line)
    return True
