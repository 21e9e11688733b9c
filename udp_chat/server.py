"""Multi-user UDP chat server: one socket, one thread, datagrams.

The chat rules are those of ``tcp_chat/server.py``; only the transport
differs.  No connections: a member is the ``(host, port)`` address its
datagrams come from, and joins with the datagram ``/join NAME``.  No framing:
one datagram is one message.  No EOF: clients send ``/ping`` heartbeats, and
members silent for longer than ``client_timeout`` are removed.  No thread
per member: ``sendto()`` never waits for the receiver.  Run: ``python -m udp_chat.server``.
"""

import socket
import sys
import time

from chat_common import cli, config, protocol
from chat_common.base_server import BaseChatServer
from chat_common.loss import InjectedLoss

# Room for any UDP datagram, so an oversized one arrives whole and is refused
# with an error, never silently truncated (Linux truncates to the buffer,
# Windows raises and loses the sender's address).
RECV_BYTES = 65535
MAX_POLL_INTERVAL = 0.5  # seconds in recvfrom() before looking for silence and stop()
MAX_READ_WAITING = 10_000  # datagrams read before a removal pass: more than a socket buffer holds


class ChatServer(BaseChatServer):
    """Single-threaded UDP chat server: ``host`` (str), ``port`` (0: any free
    one), keyword limits from :class:`chat_common.config.UdpLimits`.  Binds at
    once (``OSError`` if taken), so :attr:`address` ``(host, port)`` is known."""

    transport = "UDP"

    def __init__(self, host=config.HOST, port=config.UDP_PORT, **limits):
        self.limits = config.UdpLimits(**limits)
        super().__init__(protocol.ChatRoom(join_command=True, max_members=self.limits.max_members,
                                           max_message_bytes=self.limits.max_message_bytes),
                         self._receive_loop, "udp server")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        # The timeout bounds how late a silent member or stop() is noticed.
        self._poll_interval = min(MAX_POLL_INTERVAL, self.limits.client_timeout / 4)
        self._sock.settimeout(self._poll_interval)
        self.address = self._sock.getsockname()[:2]
        self._last_seen = {}  # member address -> time.monotonic() of its last datagram
        self._next_sweep = 0.0  # time.monotonic() of the next look for silent members
        self._loss = InjectedLoss(self.limits.loss, self.limits.seed)

    def start(self):
        """Start the server thread; say so in the log if loss is injected."""
        super().start()
        if self._loss.rate:
            self.log.warning("Для опыта теряется %s %% принятых датаграмм (--loss %s)",
                             f"{self._loss.rate * 100:g}".replace(".", ","), self._loss.rate)

    def _receive_loop(self):
        while not self._stopping.is_set():
            try:
                data, address = self._sock.recvfrom(RECV_BYTES)
            except TimeoutError:
                pass
            except OSError as error:
                # Windows reports an earlier datagram's "port unreachable" here
                # (ConnectionResetError); no error of one peer stops the server.
                self.log.debug("recvfrom: %s", error)
            else:
                self._receive(address, data)
            if time.monotonic() >= self._next_sweep:
                self._remove_silent_members()

    def _shut_down(self):
        """Tell every member the server is stopping, close the socket."""
        with self._lock:
            self._deliver([protocol.Delivery(protocol.SHUTDOWN_NOTICE)])
        self._sock.close()

    def _receive(self, address, data):
        if self._loss.drops():  # before anything else, as if the network had lost it
            self.log.debug("Датаграмма от %s:%s потеряна (--loss)", *address[:2])
        else:
            self._apply(address, data)

    def _apply(self, address, data):
        """Apply one datagram under the lock."""
        with self._lock:
            name = self._room.name_of(address) if address in self._room else None
            if name:  # any datagram, even a refused one, shows the member is alive
                self._last_seen[address] = time.monotonic()
            outcome = self._room.receive(address, data)
            if outcome.joined:
                name = outcome.joined
                self._last_seen[address] = time.monotonic()
                self.log.info("Вход в чат: %s (%s:%s)", name, *address[:2])
            self.log.debug("%s: %s", name or "%s:%s" % address[:2], outcome.text)
            self._deliver(outcome.deliveries)
            if outcome.close:
                self._leave(address, name, "выход командой /quit")

    def _send_to(self, address, data):
        if address not in self._room and len(data) > config.MAX_FIRST_REPLY_BYTES:
            # Never more to a stranger than he sent us room for: a forged
            # sender address must not turn the server into an amplifier.
            cut = data[:config.MAX_FIRST_REPLY_BYTES - 1]
            data = cut.decode(config.ENCODING, errors="ignore").encode(config.ENCODING) + b"\n"
        try:
            self._sock.sendto(data, address)
        except OSError as error:
            self.log.warning("Не удалось отправить %s:%s: %s", address[0], address[1], error)

    def _remove_silent_members(self):
        """Remove every member silent for longer than ``client_timeout``, with
        one notice for all of them: N removals cost N sends, not N²."""
        self._next_sweep = time.monotonic() + self._poll_interval
        deadline = time.monotonic() - self.limits.client_timeout
        if all(seen >= deadline for seen in self._last_seen.values()):
            return
        # Datagrams already waiting may be the heartbeats of members who only
        # look silent because we were busy: read them before judging anyone.
        self._read_waiting()
        with self._lock:
            silent = [address for address, seen in self._last_seen.items() if seen < deadline]
            for address in silent:
                self._leave(address, self._room.name_of(address), "нет сигналов присутствия")
            self._deliver(self._room.leave_all(silent, protocol.SILENT_REASON))

    def _read_waiting(self):
        self._sock.settimeout(0)  # non-blocking: only what has already arrived
        try:
            for _ in range(MAX_READ_WAITING):
                try:
                    data, address = self._sock.recvfrom(RECV_BYTES)
                except BlockingIOError:
                    return
                except OSError:
                    continue  # Windows: an earlier "port unreachable", as above
                self._receive(address, data)
        finally:
            self._sock.settimeout(self._poll_interval)

    def _leave(self, address, name, cause):
        """Forget member ``address`` (the caller holds the lock)."""
        del self._last_seen[address]
        self.log.info("Отключение %s (%s:%s): %s", name, *address[:2], cause)


def build_parser():
    """The command line of ``python -m udp_chat.server``."""
    return cli.build_parser("udp", cli.SERVER)


def main(argv=None):
    """Run the server until SIGINT or SIGTERM; return the exit code."""
    return cli.run_server(ChatServer, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
