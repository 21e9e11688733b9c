"""The command-line programs as real subprocesses.

``python -m tcp_chat.server``, ``python -m tcp_chat.select_server`` and
``python -m tcp_chat.client`` run from the repository root with UTF-8
standard streams.  Output is read by threads (:class:`LineReader`), so every
wait has a timeout.

The server tests run against both servers (ids ``threads`` and ``select``).
The client is one for both: most client tests use the threaded server only,
those that end to end exercise what a server does (a whole session, a
refused name, a full server, a shutdown) use both.
"""

import importlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from chat_common import protocol
from chat_common.console import LOST_NOTICE
from conftest import (
    LOCALHOST,
    REPO_ROOT,
    TCP_SERVER_IDS,
    TCP_SERVER_MODULES,
    TIMEOUT,
    LineReader,
    client_sync,
    collect,
    free_port,
    goodbye_line,
    join_notice,
    leave_notice,
    next_line,
    no_line,
    users_line,
    wait_until,
    welcome_line,
)

ADDRESS = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}):(\d+)\b")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
CYRILLIC = re.compile("[А-Яа-яЁё]")

posix_signals = pytest.mark.skipif(
    sys.platform == "win32", reason="POSIX signals: Windows has no SIGINT to send to a child"
)

both_servers = pytest.mark.parametrize("server_cli", TCP_SERVER_MODULES, ids=TCP_SERVER_IDS)
"""Run a server CLI test with ``python -m tcp_chat.server`` and ``... select_server``."""

threaded_server = pytest.mark.parametrize("tcp_server_module", ["threads"], indirect=True)
"""A client test that needs a server, but not both: the threaded one only."""


def start_server(run_module, server_cli, *args):
    """Start the server CLI ``server_cli`` (a module name) on a free port;
    return (process, stderr reader, address)."""
    process = run_module(
        server_cli, "--host", LOCALHOST, "--port", "0", *args, stdin=subprocess.DEVNULL
    )
    LineReader(process.stdout)  # keep the pipe drained; the server prints nothing there
    log = LineReader(process.stderr)
    bound = log.wait_for(lambda line: ADDRESS.search(line) is not None)
    host, port = ADDRESS.search(bound).groups()
    assert host == LOCALHOST and int(port) > 0, bound
    return process, log, (host, int(port))


def start_client(run_module, address, *args):
    """Start the client CLI; return (process, stdout reader, stderr reader)."""
    process = run_module("tcp_chat.client", "--host", address[0], "--port", str(address[1]), *args)
    return process, LineReader(process.stdout), LineReader(process.stderr)


def send_stdin(process, *lines):
    for line in lines:
        process.stdin.write(line + "\n")
    process.stdin.flush()


# --- Server CLI ---------------------------------------------------------------------------
@posix_signals
@both_servers
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_cli_stops_cleanly_on_signal(run_module, make_client, server_cli, signum):
    process, log, address = start_server(run_module, server_cli)
    anna = make_client(address, "Анна")
    boris = make_client(address, "Борис")
    assert next_line(anna) == join_notice("Борис")
    anna.send("тайна-42")
    assert next_line(boris) == "Анна: тайна-42"

    process.send_signal(signum)
    assert process.wait(TIMEOUT) == 0
    for client in (anna, boris):
        assert next_line(client) == protocol.SHUTDOWN_NOTICE
        assert client.closed.wait(TIMEOUT)

    lines = log.read_all()
    text = "\n".join(lines)
    assert "Traceback" not in text
    assert all(TIMESTAMP.match(line) for line in lines), lines
    # Joins are logged with the peer address; message texts are not (no -v).
    for client, name in ((anna, "Анна"), (boris, "Борис")):
        peer = "%s:%s" % client.sock.getsockname()[:2]
        assert any(name in line and peer in line for line in lines), (name, peer, lines)
    assert "тайна-42" not in text


@posix_signals
@both_servers
def test_server_cli_logs_each_leave_with_peer_address_and_cause(run_module, make_client,
                                                                 server_cli):
    process, log, address = start_server(run_module, server_cli)
    anna = make_client(address, "Анна")
    boris = make_client(address, "Борис")
    assert next_line(anna) == join_notice("Борис")
    boris_peer = "%s:%s" % boris.sock.getsockname()[:2]
    anna_peer = "%s:%s" % anna.sock.getsockname()[:2]
    boris.close()  # says /quit
    assert next_line(anna) == leave_notice("Борис")
    process.send_signal(signal.SIGINT)
    assert process.wait(TIMEOUT) == 0
    lines = log.read_all()
    left = [line for line in lines if "Отключение" in line]
    assert any("Борис" in line and boris_peer in line and "/quit" in line for line in left), lines
    assert any("Анна" in line and anna_peer in line and "сервер остановлен" in line
               for line in left), lines


@posix_signals
@both_servers
def test_server_cli_verbose_logs_messages(run_module, make_client, server_cli):
    process, log, address = start_server(run_module, server_cli, "-v")
    anna = make_client(address, "Анна")
    anna.send("видно-в-журнале")
    anna.send("/users")
    assert next_line(anna) == users_line("Анна")  # the message was handled
    process.send_signal(signal.SIGINT)
    assert process.wait(TIMEOUT) == 0
    text = "\n".join(log.read_all())
    assert "видно-в-журнале" in text
    assert "Traceback" not in text


@posix_signals
@both_servers
def test_server_cli_limit_flags(run_module, make_raw, server_cli):
    process, log, address = start_server(run_module, server_cli,
                                         "--max-clients", "1", "--name-timeout", "0.5")
    first = make_raw(address)
    assert first.read_line() == protocol.NAME_PROMPT
    second = make_raw(address)  # over --max-clients 1
    assert second.read_line().startswith(protocol.ERROR_PREFIX)
    second.expect_eof()
    # --name-timeout 0.5: the silent first connection is closed soon.
    assert first.read_line().startswith(protocol.ERROR_PREFIX)
    first.expect_eof()
    process.send_signal(signal.SIGINT)
    assert process.wait(TIMEOUT) == 0
    assert "Traceback" not in "\n".join(log.read_all())


@both_servers
def test_server_cli_port_taken(run_module, server_cli):
    with socket.create_server((LOCALHOST, 0)) as taken:
        port = taken.getsockname()[1]
        process = run_module(server_cli, "--host", LOCALHOST, "--port", str(port),
                             stdin=subprocess.DEVNULL)
        out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    assert str(port) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("module", [*TCP_SERVER_MODULES, "tcp_chat.client"])
def test_help_is_russian(run_module, module):
    process = run_module(module, "--help", stdin=subprocess.DEVNULL)
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert err == ""
    assert "чат" in out  # the description
    # One block per option ("  --port PORT  порт ..."); argparse's own
    # "-h, --help" line stays as argparse words it.
    blocks = [b for b in re.split(r"\n(?=  -)", out) if b.startswith("  -")]
    options = {}
    for block in blocks:
        for option in re.findall(r"--[a-z-]+", block.split("\n")[0]):
            options[option] = block
    parser = importlib.import_module(module).build_parser()
    expected = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert expected <= set(options), out
    for option in expected:
        assert CYRILLIC.search(options[option]), f"{option}: {options[option]!r}"
    assert f"python -m {module}" in out.split("\n")[0]  # the usage names this very program
    if module in TCP_SERVER_MODULES:
        for flag in ("--host", "--port", "--max-clients", "--name-timeout",
                     "--send-queue-limit", "--verbose"):
            assert flag in options


ALL_PROGRAMS = [*TCP_SERVER_MODULES, "tcp_chat.client", "udp_chat.server", "udp_chat.client",
                "benchmarks.chat_bench"]


@pytest.mark.parametrize("module", ALL_PROGRAMS)
@pytest.mark.parametrize("args", [["--port", "x"], ["--port"], ["--bogus"], ["--po", "5"]],
                         ids=["not-a-number", "no-value", "unknown", "abbreviated"])
def test_usage_errors_are_russian(run_module, module, args):
    if module == "benchmarks.chat_bench":
        args = ["--clients" if arg == "--port" else arg for arg in args]
    process = run_module(module, *args, stdin=subprocess.DEVNULL)
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 2, err
    usage, error = err.splitlines()[0], err.splitlines()[-1]
    assert usage.startswith("Запуск: python -m " + module), err
    assert error.startswith(f"python -m {module}: ошибка: "), err
    # Only the program's name, flags and the user's own text may be Latin.
    words = error.split(": ", 1)[1]
    for allowed in [*args, module, "python"]:
        words = words.replace(allowed, "")
    assert not re.search("[A-Za-z]", words), err


# --- Client CLI ---------------------------------------------------------------------------
def test_client_cli_piped_stdin(server, make_client, run_module):
    watcher = make_client(server.address, "Наблюдатель")
    lines = ["Привет, мир!", "Вторая строка — ёжик", "Съешь ещё этих мягких булок"]
    process = run_module(
        "tcp_chat.client", "--host", LOCALHOST, "--port", str(server.address[1]), "--name", "Петя"
    )
    out, err = process.communicate("\n".join(lines) + "\n", timeout=3 * TIMEOUT)
    assert process.returncode == 0, err
    assert err == ""
    assert collect(watcher, len(lines) + 2) == (
        [join_notice("Петя")] + [f"Петя: {line}" for line in lines] + [leave_notice("Петя")]
    )
    shown = out.splitlines()
    assert shown[:2] == [protocol.NAME_PROMPT, welcome_line("Наблюдатель", "Петя")]
    assert shown[-1] == goodbye_line("Петя")  # EOF sent /quit and got the answer
    assert LOST_NOTICE not in shown


@threaded_server
def test_client_cli_shows_lines_from_others(server, make_client, run_module):
    watcher = make_client(server.address, "Наблюдатель")
    process, out, err = start_client(run_module, server.address, "--name", "Петя")
    assert out.wait_for(lambda line: line.startswith(protocol.WELCOME_PREFIX)) == welcome_line(
        "Наблюдатель", "Петя"
    )
    assert next_line(watcher) == join_notice("Петя")
    send_stdin(process, "раз", "два")
    assert collect(watcher, 2) == ["Петя: раз", "Петя: два"]
    watcher.send("ответ наблюдателя")
    watcher.send("/msg петя по секрету")
    out.wait_for(lambda line: line == "Наблюдатель: ответ наблюдателя")
    out.wait_for(lambda line: line == "Наблюдатель (лично): по секрету")
    send_stdin(process, "/quit")
    assert process.wait(TIMEOUT) == 0
    assert next_line(watcher) == leave_notice("Петя")
    assert out.read_all()[-1] == goodbye_line("Петя")
    assert err.read_all() == []
    process.stdin.close()


@threaded_server
def test_client_cli_asks_for_name_without_flag(server, make_client, run_module):
    watcher = make_client(server.address, "Наблюдатель")
    process = run_module("tcp_chat.client", "--host", LOCALHOST, "--port", str(server.address[1]))
    out, err = process.communicate("плохое имя\nМаша\nпривет\n", timeout=3 * TIMEOUT)
    assert process.returncode == 0, err
    assert collect(watcher, 3) == [join_notice("Маша"), "Маша: привет", leave_notice("Маша")]
    shown = out.splitlines()
    assert shown[0] == protocol.NAME_PROMPT
    assert shown[1].startswith(protocol.ERROR_PREFIX)  # "плохое имя" has a space
    assert shown[2] == protocol.NAME_PROMPT
    assert shown[3] == welcome_line("Наблюдатель", "Маша")



def test_client_cli_refused_name_exits_1_and_sends_nothing_more(
        tcp_server_module, server, make_client, run_module, caplog):
    # With --name the user chose the name on the command line: a refusal ends
    # the program, and the first line of stdin is never sent as a second try.
    # Each server logs under its module's name; at DEBUG every line received.
    caplog.set_level(logging.DEBUG, logger=tcp_server_module.__name__)
    watcher = make_client(server.address, "Наблюдатель")
    with pytest.raises(protocol.NameRefused) as refused:
        protocol.validate_name("Плохое имя")
    process = run_module("tcp_chat.client", "--host", LOCALHOST, "--port", str(server.address[1]),
                         "--name", "Плохое имя")
    out, err = process.communicate("Привет!\n", timeout=3 * TIMEOUT)
    # The server has read a connection to its end once it logs the
    # disconnection: wait until every connection but the watcher's is over.
    def log_count(word):
        return sum(record.getMessage().startswith(word) for record in caplog.records)

    wait_until(lambda: log_count("Отключение") == log_count("Подключение") - 1,
               message="the server to log the disconnection")
    received = [record.getMessage() for record in caplog.records]
    assert any("Плохое имя" in line for line in received), received  # the log works
    assert not any("Привет!" in line for line in received), received
    assert process.returncode == 1, (out, err)
    assert err.splitlines() == [protocol.error_line(str(refused.value))]
    assert "Привет!" not in out
    # Nobody joined: a join notice would have come before the /users answer.
    assert client_sync(watcher) == users_line("Наблюдатель")
    no_line(watcher, 0)


def test_client_cli_connection_refused(run_module):
    port = free_port()
    process = run_module("tcp_chat.client", "--host", LOCALHOST, "--port", str(port), "--name", "Х")
    out, err = process.communicate("", timeout=TIMEOUT)
    assert process.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert str(port) in err
    assert "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("with_name", [True, False], ids=["--name", "asks-name"])
def test_client_cli_on_a_full_server_exits_1_without_traceback(
        make_server, make_raw, run_module, with_name):
    # The server refuses and closes at once, often before the client's main
    # thread has finished connecting: that used to end in a KeyboardInterrupt
    # traceback (exit 130) in some runs, so several runs are tried.
    server = make_server(max_clients=1)
    holder = make_raw(server.address)
    assert holder.read_line() == protocol.NAME_PROMPT
    args = ["--name", "Лишний"] if with_name else []
    for _ in range(6):
        process, out, err = start_client(run_module, server.address, *args)
        # stdin stays open: only the server can end this client.
        assert process.wait(TIMEOUT) == 1
        shown = out.read_all()
        assert shown[0].startswith(protocol.ERROR_PREFIX) and "переполнен" in shown[0]
        assert shown[-1] == LOST_NOTICE
        assert "Traceback" not in "\n".join(err.read_all())
        process.stdin.close()


@threaded_server
def test_client_cli_survives_a_stdout_that_cannot_encode_cyrillic(server, make_client):
    # A Windows pipe has the ANSI code page; letters it lacks become "?".
    watcher = make_client(server.address, "Наблюдатель")
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    result = subprocess.run(
        [sys.executable, "-m", "tcp_chat.client", "--host", LOCALHOST,
         "--port", str(server.address[1]), "--name", "Bob"],
        cwd=REPO_ROOT, env=env, input=b"hi\n", capture_output=True, timeout=3 * TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr, result.stderr
    shown = result.stdout.decode("ascii").splitlines()
    assert shown[1].startswith("*** ") and "Bob!" in shown[1] and "?" in shown[1]  # welcome
    assert shown[-1].startswith("*** ") and "Bob!" in shown[-1]  # goodbye
    assert collect(watcher, 3) == [join_notice("Bob"), "Bob: hi", leave_notice("Bob")]


def test_client_cli_announced_stop_is_a_stop_not_a_loss(make_server, make_client, run_module):
    server = make_server()
    process, out, err = start_client(run_module, server.address, "--name", "Петя")
    out.wait_for(lambda line: line.startswith(protocol.WELCOME_PREFIX))
    # stdin stays open: the client is waiting for the user when the server stops.
    server.stop()
    assert process.wait(TIMEOUT) == 0
    shown = out.read_all()
    assert shown[-1] == protocol.SHUTDOWN_NOTICE  # nothing about a lost connection after it
    assert LOST_NOTICE not in shown
    assert "Traceback" not in "\n".join(err.read_all())
    process.stdin.close()


def test_client_cli_connection_lost_without_notice_exits_1(run_module):
    # A "server" that lets the client in and then vanishes without a word.
    with socket.create_server((LOCALHOST, 0)) as listener:
        listener.settimeout(TIMEOUT)
        process, out, err = start_client(run_module, listener.getsockname()[:2], "--name", "Петя")
        conn, _ = listener.accept()
        with conn:
            conn.sendall(protocol.encode_line(protocol.NAME_PROMPT))
            conn.settimeout(TIMEOUT)
            assert conn.recv(100) == "Петя\n".encode()
            conn.sendall(protocol.encode_line(welcome_line("Петя")))
            out.wait_for(lambda line: line.startswith(protocol.WELCOME_PREFIX))
    # stdin stays open: only the lost connection can end this client.
    assert process.wait(TIMEOUT) == 1
    assert out.read_all()[-1] == LOST_NOTICE
    assert "Traceback" not in "\n".join(err.read_all())
    process.stdin.close()


TELNET = shutil.which("telnet") or shutil.which("inetutils-telnet")


@pytest.mark.skipif(TELNET is None or sys.platform == "win32", reason="no telnet program here")
def test_telnet_is_not_offered_because_it_mangles_cyrillic_bytes():
    """The README's one line on why ``nc`` and not telnet, checked with the real program.

    telnet in a terminal (a pseudo-terminal here) turns some bytes of Russian
    letters into telnet commands (IAC = 0xFF): the line is no longer UTF-8."""
    import pty  # POSIX only

    with socket.create_server((LOCALHOST, 0)) as listener:
        listener.settimeout(TIMEOUT)
        controller, terminal = pty.openpty()
        telnet = subprocess.Popen([TELNET, LOCALHOST, str(listener.getsockname()[1])],
                                  stdin=terminal, stdout=terminal, stderr=terminal)
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                os.write(controller, "Ку-ку\r".encode())
                received = b""
                while not received.endswith(b"\r\n"):
                    received += conn.recv(1000)
        finally:
            telnet.kill()
            telnet.wait(TIMEOUT)
            os.close(controller)
            os.close(terminal)
    assert received != "Ку-ку\r\n".encode() and b"\xff" in received, received
    with pytest.raises(UnicodeDecodeError):
        received.decode("utf-8")


def test_nc_style_client_with_cli_client(server, make_client, run_module, make_raw):
    """The three-person session of the issue: a CLI client, ``nc`` and one more."""
    watcher = make_client(server.address, "Наблюдатель")
    nc = make_raw(server.address)
    assert nc.read_line_bytes() == (protocol.NAME_PROMPT + "\n").encode()
    nc.send_bytes("Ник\r\n".encode())
    assert nc.read_line() == welcome_line("Наблюдатель", "Ник")
    assert next_line(watcher) == join_notice("Ник")

    process, out, err = start_client(run_module, server.address, "--name", "Петя")
    out.wait_for(lambda line: line.startswith(protocol.WELCOME_PREFIX))
    assert nc.read_line() == join_notice("Петя")
    assert next_line(watcher) == join_notice("Петя")

    nc.send_bytes("привет от nc\r\n".encode())
    assert out.wait_for(lambda line: line.startswith("Ник")) == "Ник: привет от nc"
    assert next_line(watcher) == "Ник: привет от nc"

    send_stdin(process, "привет, Ник")
    assert nc.read_line_bytes() == "Петя: привет, Ник\n".encode()  # "\n" only, no "\r"
    assert next_line(watcher) == "Петя: привет, Ник"

    process.stdin.close()  # EOF: the client says /quit
    assert process.wait(TIMEOUT) == 0
    assert nc.read_line() == leave_notice("Петя")
    nc.send_bytes(b"/quit\r\n")
    assert nc.read_line() == goodbye_line("Ник")
    nc.expect_eof()
    assert next_line(watcher) == leave_notice("Петя")
    assert next_line(watcher) == leave_notice("Ник")
    assert err.read_all() == []
