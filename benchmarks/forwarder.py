"""Trivial forwarder: the ceiling of the load generator, not a chat.

``python -m benchmarks.chat_bench --variant ceiling`` (or ``--ceiling``) runs
the same workload against this process to measure how many deliveries per
second the benchmark itself can send and receive.  It does the least a
forwarder can do and still keep lines whole: one thread, ``selectors``;
a connection gets the name prompt, its first line is the name, answered
with a welcome; after that the complete lines read from all senders in one
round of ``select()`` go to every other joined connection in one blocking
``sendall`` per connection.  No names are added, nothing is decoded, there
are no limits: a client that stops reading stops everyone (so the harness
never gives it slow readers).

Run: ``python -m benchmarks.forwarder --port 0``; stop with Ctrl+C or SIGTERM.
"""

import logging
import selectors
import signal
import socket
import sys

from chat_common import protocol
from chat_common.cli import make_parser, port_number, setup_logging

log = logging.getLogger("benchmarks.forwarder")
RECV_BYTES = 1 << 18


def serve(listener):
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    naming = {}  # socket -> bytes received before the end of the name line
    members = {}  # socket -> unfinished line (bytes), in the order of joining
    prompt = protocol.encode_line(protocol.NAME_PROMPT)
    while True:
        blocks = {}  # sender socket -> its complete lines read in this round
        for key, _ in sel.select(0.5):
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                conn.setblocking(True)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.sendall(prompt)
                naming[conn] = b""
                sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(RECV_BYTES)
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                naming.pop(sock, None)
                members.pop(sock, None)
                sock.close()
                continue
            if sock in naming:
                data = naming.pop(sock) + data
                if b"\n" not in data:
                    naming[sock] = data
                    continue
                name, _, data = data.partition(b"\n")
                welcome = f"{protocol.WELCOME_PREFIX}, {name.decode('utf-8', 'replace')}!"
                sock.sendall(protocol.encode_line(welcome))
                members[sock] = b""
            data = members[sock] + data
            end = data.rfind(b"\n") + 1
            members[sock] = data[end:]
            if end:
                blocks[sock] = data[:end]
        if blocks:
            forward(blocks, members)


def forward(blocks, members):
    """One ``sendall`` per member: the blocks of every sender but itself."""
    everything = b"".join(blocks.values())
    for other in list(members):
        if other in blocks:
            data = b"".join(block for sock, block in blocks.items() if sock is not other)
        else:
            data = everything
        if data:
            try:
                other.sendall(data)
            except OSError:
                pass  # it is gone; its own EOF removes it


def main(argv=None):
    parser, options = make_parser("python -m benchmarks.forwarder",
                                  "Простейший пересыльщик строк: потолок нагрузочного стенда. "
                                  "Остановка — Ctrl+C.")
    options.add_argument("--host", default="127.0.0.1", metavar="АДРЕС",
                         help="адрес (по умолчанию 127.0.0.1)")
    options.add_argument("--port", type=port_number, default=5053, metavar="ПОРТ",
                         help="порт (по умолчанию 5053; 0 — любой свободный)")
    args = parser.parse_args(argv)
    setup_logging(False)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    listener = socket.create_server((args.host, args.port), backlog=128)
    listener.setblocking(False)
    log.info("Сервер ceiling слушает %s:%s", *listener.getsockname()[:2])
    try:
        serve(listener)
    except KeyboardInterrupt:
        log.info("Сервер остановлен")
    return 0


if __name__ == "__main__":
    sys.exit(main())
