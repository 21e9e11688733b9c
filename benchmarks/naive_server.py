"""BASELINE, DELIBERATELY WRONG: the classic lab answer to "write a chat server".

Not part of the chat.  It exists only so that the benchmark
(``python -m benchmarks.chat_bench --variant naive``) can show tcp_chat next
to what most students write first: one thread per client; the first line is
the name; then every raw ``recv()`` chunk is forwarded with ``sendall`` to
every other client, from the sender's own thread, over a shared dict with no
lock.  It is fast (one chunk carries many messages) and wrong:

* no framing: chunks glue and split messages, a letter of Cyrillic may be cut
  in two at a chunk edge, and two senders' chunks may interleave mid-line;
* no names in the forwarded lines, no notices, no commands, no limits;
* one client that stops reading blocks ``sendall`` and so stalls the sender's
  thread, and with it everyone that sender talks to;
* the dict of clients is changed by other threads while being iterated.

Like the classic answers, it swallows exceptions per send, so the benchmark
itself does not crash.  Run: ``python -m benchmarks.naive_server --port 0``.
"""

import logging
import signal
import socket
import threading

from chat_common import protocol
from chat_common.cli import make_parser, port_number, setup_logging

clients = {}  # name -> socket, shared by all threads WITHOUT a lock (the classic bug)


def handle(conn):
    conn.sendall(protocol.encode_line(protocol.NAME_PROMPT))
    data = b""
    while b"\n" not in data:  # the name: recv until a newline; what follows it is lost
        chunk = conn.recv(4096)
        if not chunk:
            return conn.close()
        data += chunk
    name = data.split(b"\n")[0].decode("utf-8", "replace").strip()
    # Registered before the welcome: a client that got its welcome must get
    # what others send next, or the benchmark would count a join race as loss.
    clients[name] = conn
    conn.sendall(protocol.encode_line(f"{protocol.WELCOME_PREFIX}, {name}!"))
    try:
        while chunk := conn.recv(4096):  # the textbook buffer size
            try:
                for other in clients.values():  # RuntimeError if the dict changes meanwhile
                    if other is not conn:
                        try:
                            other.sendall(chunk)  # blocks while that client does not read
                        except Exception:
                            pass
            except RuntimeError:
                pass  # the chunk is lost for the clients not reached yet
    except OSError:
        pass
    finally:
        clients.pop(name, None)
        conn.close()


def main(argv=None):
    parser, options = make_parser("python -m benchmarks.naive_server",
                                  "Наивный сервер чата, заведомо неверный: эталон для сравнения "
                                  "в нагрузочном стенде. Остановка — Ctrl+C.")
    options.add_argument("--host", default="127.0.0.1", metavar="АДРЕС",
                         help="адрес (по умолчанию 127.0.0.1)")
    options.add_argument("--port", type=port_number, default=5052, metavar="ПОРТ",
                         help="порт (по умолчанию 5052; 0 — любой свободный)")
    args = parser.parse_args(argv)
    setup_logging(False)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts as Ctrl+C
    server = socket.create_server((args.host, args.port), backlog=128)
    server.settimeout(0.5)  # wake up now and then: Ctrl+C on Windows
    logging.info("Сервер naive слушает %s:%s", *server.getsockname()[:2])
    try:
        while True:
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    except KeyboardInterrupt:
        logging.info("Сервер остановлен")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
