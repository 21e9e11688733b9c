"""The command line of all programs, declared once (as fopnp's zen_utils does):
:func:`build_parser` makes any program's parser from the table :data:`OPTIONS`,
and :func:`run_server` is how both servers log, start and stop on Ctrl+C."""

import argparse
import logging
import re
import signal
import sys
import time

from chat_common import config


def _number_type(kind, check, error):
    """argparse type: ``kind`` (int, float) passing ``check`` (NaN fails it); else Russian error."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"не число: {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{error}, а не {text}")
        return value
    return parse


port_number = _number_type(int, lambda port: 0 <= port <= 65535, "порт должен быть от 0 до 65535")
positive_int = _number_type(int, lambda number: number > 0, "нужно целое число больше нуля")
positive_seconds = _number_type(float, lambda sec: 0 < sec < float("inf"),  # 0: non-blocking
                                "нужно число секунд больше нуля")
loss_rate = _number_type(float, lambda rate: 0 <= rate < 1, "нужна доля от 0 до 1 (не включая 1)")


SERVER, CLIENT = "server", "client"
OPTIONS = [  # (flag, programs, type, default, metavar, help); {port}: the program's port
    ("--host", "tcp udp server client", str, config.HOST, "АДРЕС",
     f"адрес сервера (по умолчанию {config.HOST}; серверу 0.0.0.0 — все интерфейсы)"),
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
    ("--loss", "udp server client", loss_rate, 0.0, "P",
     "для опытов: терять такую долю принятых датаграмм, как плохая сеть (по умолчанию 0)"),
    ("--seed", "udp server client", positive_int, None, "N",
     "зерно случайных потерь: с ним потери повторяются от запуска к запуску"),
    ("--max-message-bytes", "tcp udp server", positive_int, config.MAX_MESSAGE_BYTES, "БАЙТЫ",
     "наибольшая длина сообщения в байтах без конца строки (по умолчанию {default})"),
]


class _RussianHelpFormatter(argparse.HelpFormatter):
    def add_usage(self, usage, actions, groups, prefix=None):
        return super().add_usage(usage, actions, groups, prefix or "Запуск: ")


class _RussianParser(argparse.ArgumentParser):
    """argparse words its own errors in English: these are said in Russian."""
    ERRORS = {r"argument (\S+): ": r"параметр \1: ", "expected one argument": "нужно значение",
              r"invalid choice: (\S+) \(choose from (.*)\)": r"нет варианта \1, есть: \2",
              "unrecognized arguments": "неизвестные параметры", r"invalid \w+ value": "не число"}

    def error(self, message):
        for english, russian in self.ERRORS.items():
            message = re.sub(english, russian, message)
        self.exit(2, f"{self.format_usage()}{self.prog}: ошибка: {message}\n")


def make_parser(prog, description):
    """``(parser, options group)`` with help and errors in Russian (argparse's are English)."""
    parser = _RussianParser(prog=prog, description=description, add_help=False,
                            allow_abbrev=False, formatter_class=_RussianHelpFormatter)
    options = parser.add_argument_group("параметры")
    options.add_argument("-h", "--help", action="help", help="показать эту справку и выйти")
    return parser, options


def build_parser(transport, program, prog=None):
    """The parser of one program (``transport``: "tcp" or "udp"; ``program``:
    :data:`SERVER` or :data:`CLIENT`; ``prog``: the command shown in the help)."""
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
    for level, russian in ((logging.DEBUG, "ОТЛАДКА"), (logging.INFO, "ИНФО"),
                           (logging.WARNING, "ВНИМАНИЕ"), (logging.ERROR, "ОШИБКА")):
        logging.addLevelName(level, russian)  # people read the log: in Russian
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)


def run_server(server_class, args):
    """Serve ``server_class(host, port, **limits)`` made from ``args`` until
    SIGINT or SIGTERM; return the exit code (1 if the address cannot be
    bound).  Main thread only.  The signal handler only records the signal:
    raising KeyboardInterrupt could strike inside an Event's lock."""
    setup_logging(args.verbose)
    try:
        limits = {key: value for key, value in vars(args).items()  # the same names (see config)
                  if key not in ("host", "port", "verbose")}
        server = server_class(args.host, args.port, **limits)
    except OSError as error:
        print(f"Не удалось открыть порт {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    received = []  # SIGTERM (kill) stops as Ctrl+C does; SIGINT works even if the shell ignored it
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    try:
        server.start()
        while not received:
            time.sleep(0.1)  # a look for a signal 10 times a second; interruptible on Windows too
        server.log.info("Получен сигнал остановки")
    finally:
        server.stop()
    return 0
