"""The command line of all programs, declared once (as fopnp's zen_utils does).

:func:`build_parser` makes the parser of any of the programs from one table
of options, :data:`OPTIONS`; the argparse types give Russian errors; and
:func:`run_server` is how both servers log, start and stop on Ctrl+C.
"""

import argparse
import logging
import signal
import sys
import time

from chat_common import config


def _number(text, kind, check, error):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"не число: {text!r}") from None
    if not check(value):  # NaN fails every comparison, so it is refused too
        raise argparse.ArgumentTypeError(f"{error}, а не {text}")
    return value


def port_number(text):
    """argparse type: a port number, 0 to 65535 (int); Russian error otherwise."""
    return _number(text, int, lambda port: 0 <= port <= 65535, "порт должен быть от 0 до 65535")


def positive_int(text):
    """argparse type: a whole number above zero (int); Russian error otherwise."""
    return _number(text, int, lambda number: number > 0, "нужно целое число больше нуля")


def positive_seconds(text):
    """argparse type: seconds above zero (float); Russian error otherwise.
    Zero is refused: ``settimeout(0)`` would make a socket non-blocking."""
    return _number(text, float, lambda seconds: 0 < seconds < float("inf"),
                   "нужно число секунд больше нуля")


SERVER, CLIENT = "server", "client"
OPTIONS = [  # (flag, programs, type, default, metavar, help); {port}: the program's port
    ("--host", "tcp udp server", str, config.HOST, "АДРЕС",
     f"адрес, на котором слушать (по умолчанию {config.HOST}; 0.0.0.0 — все интерфейсы)"),
    ("--host", "tcp udp client", str, config.HOST, "АДРЕС",
     f"адрес сервера (по умолчанию {config.HOST})"),
    ("--port", "tcp udp server client", port_number, None, "ПОРТ",
     "порт сервера (по умолчанию {port}; у сервера 0 — любой свободный)"),
    ("--name", "tcp udp client", str, None, "ИМЯ", "имя в чате; без него клиент спросит имя"),
    ("--heartbeat", "udp client", positive_seconds, config.HEARTBEAT_INTERVAL, "СЕКУНДЫ",
     "как часто сообщать серверу, что клиент жив (по умолчанию раз в {default:g} с)"),
    ("--max-clients", "tcp server", positive_int, config.MAX_CLIENTS, "N",
     "наибольшее число подключений, с именем или ещё без (по умолчанию {default})"),
    ("--name-timeout", "tcp server", positive_seconds, config.NAME_TIMEOUT, "СЕКУНДЫ",
     "сколько секунд ждать имя нового клиента (по умолчанию {default:g})"),
    ("--send-queue-limit", "tcp server", positive_int, config.SEND_QUEUE_LIMIT, "СТРОКИ",
     "сколько строк может ждать отправки одному клиенту, прежде чем его отключат "
     "как не успевающего (по умолчанию {default})"),
    ("--send-queue-bytes", "tcp server", positive_int, config.SEND_QUEUE_BYTES, "БАЙТЫ",
     "то же ограничение в байтах (по умолчанию {default})"),
    ("--flush-timeout", "tcp server", positive_seconds, config.SHUTDOWN_FLUSH_TIMEOUT, "СЕКУНДЫ",
     "сколько секунд при остановке дослать очереди (по умолчанию {default:g})"),
    ("--backlog", "tcp server", positive_int, config.BACKLOG, "N",
     "очередь ещё не принятых подключений в ядре (по умолчанию {default})"),
    ("--client-timeout", "udp server", positive_seconds, config.CLIENT_TIMEOUT, "СЕКУНДЫ",
     "через сколько секунд тишины участник считается ушедшим (по умолчанию {default:g})"),
    ("--max-members", "udp server", positive_int, config.MAX_MEMBERS, "N",
     "наибольшее число участников (по умолчанию {default})"),
    ("--max-message-bytes", "tcp udp server", positive_int, config.MAX_MESSAGE_BYTES, "БАЙТЫ",
     "наибольшая длина сообщения в байтах без конца строки (по умолчанию {default})"),
]


class _RussianHelpFormatter(argparse.HelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        return super().add_usage(usage, actions, groups, prefix or "Запуск: ")


def make_parser(prog, description):
    """Return ``(parser, options)``: an ``argparse.ArgumentParser`` with help
    in Russian (argparse's own "usage:" is English) and its option group."""
    parser = argparse.ArgumentParser(prog=prog, description=description, add_help=False,
                                     formatter_class=_RussianHelpFormatter)
    options = parser.add_argument_group("параметры")
    options.add_argument("-h", "--help", action="help", help="показать эту справку и выйти")
    return parser, options


def build_parser(transport, program, prog=None):
    """The parser of one program, with the options of :data:`OPTIONS` that
    it has.  ``transport``: "tcp" or "udp"; ``program``: :data:`SERVER` or
    :data:`CLIENT`; ``prog``: the command shown in the help."""
    port = config.TCP_PORT if transport == "tcp" else config.UDP_PORT
    if program == SERVER:
        about = f"сервер {transport.upper()}. Остановка — Ctrl+C."
    else:
        about = f"клиент {transport.upper()}. Пишите сообщения и нажимайте Enter; /help — команды."
    parser, options = make_parser(prog or f"python -m {transport}_chat.{program}",
                                  f"Многопользовательский чат: {about}")
    for flag, programs, kind, default, metavar, text in OPTIONS:
        if transport in programs.split() and program in programs.split():
            default = port if flag == "--port" else default
            options.add_argument(flag, type=kind, default=default, metavar=metavar,
                                 help=text.format(default=default, port=port))
    if program == SERVER:
        options.add_argument("-v", "--verbose", action="store_true",
                             help="подробный журнал, включая текст сообщений")
    return parser


def setup_logging(verbose):
    """Log to stderr with timestamps; DEBUG level (message texts) if ``verbose``."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


SIGNAL_POLL_INTERVAL = 0.1  # seconds between the main thread's looks for a signal


def run_server(server_class, args):
    """Make ``server_class(host, port, **limits)`` from parsed ``args`` and
    serve until Ctrl+C (SIGINT) or SIGTERM; return the exit code: 0, or 1 if
    the address cannot be bound.  Must run in the main thread.  The signal
    handler only records the signal and the main thread polls for it: one
    that raised KeyboardInterrupt could strike inside an Event's lock."""
    setup_logging(args.verbose)
    try:
        # Every other option is a keyword argument of the same name (see config).
        limits = {key: value for key, value in vars(args).items()
                  if key not in ("host", "port", "verbose")}
        server = server_class(args.host, args.port, **limits)
    except OSError as error:
        print(f"Не удалось открыть порт {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    received = []
    # SIGTERM (kill, service managers) stops the server as Ctrl+C does, and
    # SIGINT must work even where a shell started us with it ignored.
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        server.start()
        while not received:
            time.sleep(SIGNAL_POLL_INTERVAL)  # interruptible on Windows too
        server.log.info("Получен сигнал остановки")
    finally:
        server.stop()
    return 0
