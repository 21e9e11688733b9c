"""The UDP command-line programs as real subprocesses.

``python -m udp_chat.server`` and ``python -m udp_chat.client`` run from the
repo root with UTF-8 pipes, against real UDP sockets on 127.0.0.1 with ports
chosen by the OS.  Every wait is bounded; a child still running at the end of
a test is killed.
"""

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from chat_common import config
from chat_common import protocol
from udp_chat import client as udp_client
from tests import udp_support
from tests.udp_support import (
    LOCALHOST,
    TIMEOUT,
    USERS_PREFIX,
    Child,
    chat_room,
    dead_udp_port,
    is_notice_about,
    next_line,
    online,
    run_module,
)

# Fixtures shared with the other UDP test module (see tests/udp_support.py).
udp_server = udp_support.udp_server
make_peer = udp_support.make_peer
make_udp_client = udp_support.make_udp_client
make_udp_server = udp_support.make_udp_server

# An exception escaping a thread of the in-process server is a failure.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

BOUND_ADDRESS = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d+)")
"""``HOST:PORT`` in the start-up log line (the timestamp has no dotted quad)."""


spawn = udp_support.spawn


def start_server(spawn, *args):
    """Start the server CLI on a free port; return ``(child, (host, port))``."""
    child = spawn("udp_chat.server", "--port", 0, *args)
    line = child.wait_for(child.stderr, BOUND_ADDRESS.search)
    host, port = BOUND_ADDRESS.search(line).groups()
    assert host == config.HOST and int(port) > 0, line
    return child, (host, int(port))


def assert_no_traceback(text):
    assert "Traceback" not in text, text


def client_users(client):
    client.send("/users")
    return online(next_line(client.lines))


# --- Help --------------------------------------------------------------------------
@pytest.mark.parametrize("module, flag", [
    ("udp_chat.server", "--client-timeout"),
    ("udp_chat.client", "--heartbeat"),
])
def test_help_is_in_russian(module, flag):
    result = run_module(module, "--help")
    assert result.returncode == 0, result.stderr
    assert flag in result.stdout and "--port" in result.stdout
    assert "порт" in result.stdout and "UDP" in result.stdout
    assert "по умолчанию" in result.stdout


# --- Server ------------------------------------------------------------------------
@posix_signals
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_logs_bound_address_and_stops_on_signal(spawn, make_peer, signum):
    child, address = start_server(spawn, "--client-timeout", 30)
    anya, boris = chat_room(make_peer, address, "Аня", "Борис")
    anya.send("секрет")
    assert boris.recv() == "Аня: секрет"

    child.proc.send_signal(signum)
    assert anya.recv() == protocol.SHUTDOWN_NOTICE
    assert boris.recv() == protocol.SHUTDOWN_NOTICE
    assert child.wait() == 0, child.err_lines[-10:]
    log = "\n".join(child.err_lines)
    assert_no_traceback(log)
    assert "{}:{}".format(*anya.address) in log  # joins are logged with the address
    assert "секрет" not in log  # message text only with -v


def test_server_on_a_busy_port_exits_1_without_traceback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((LOCALHOST, 0))
        result = run_module("udp_chat.server", "--port", taken.getsockname()[1])
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_no_traceback(result.stderr)


@posix_signals
def test_cli_client_and_server_shutdown_end_to_end(spawn):
    server_child, (host, port) = start_server(spawn, "--client-timeout", 30, "-v")
    client_child = spawn("udp_chat.client", "--host", host, "--port", port, "--name", "Вася",
                         "--heartbeat", 0.2, stdin=subprocess.PIPE)
    welcome = client_child.wait_for(client_child.stdout, bool)
    assert welcome.startswith(f"{protocol.WELCOME_PREFIX}, Вася!")
    client_child.proc.stdin.write("всем привет\n".encode(config.ENCODING))
    client_child.proc.stdin.flush()
    # -v: the server logs message texts.
    server_child.wait_for(server_child.stderr, lambda line: "всем привет" in line)

    server_child.proc.send_signal(signal.SIGINT)
    assert server_child.wait() == 0
    # The client shows the notice and ends by itself, its stdin still open:
    # an announced stop is a stop, code 0, and nothing about a lost server.
    client_child.wait_for(client_child.stdout, lambda line: line == protocol.SHUTDOWN_NOTICE)
    assert client_child.wait() == 0
    assert client_child.out_lines[-1] == protocol.SHUTDOWN_NOTICE
    assert all("соединени" not in line.lower() for line in client_child.out_lines)
    assert_no_traceback("\n".join(server_child.err_lines + client_child.err_lines))


# --- Client ------------------------------------------------------------------------
@posix_signals
def test_cli_client_says_the_server_is_gone_when_it_vanishes_without_a_word(spawn):
    # A "server" that welcomes the client and then closes its socket: the next
    # heartbeat meets ICMP "port unreachable".  UDP has no connection to lose,
    # so the client says the server is unavailable, never "соединение".
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind((LOCALHOST, 0))
        fake.settimeout(TIMEOUT)
        client_child = spawn("udp_chat.client", "--port", fake.getsockname()[1], "--name", "Вася",
                             "--heartbeat", 0.1, stdin=subprocess.PIPE)
        join, client_address = fake.recvfrom(1000)
        assert join == "/join Вася".encode()
        fake.sendto(f"{protocol.WELCOME_PREFIX}, Вася!".encode(), client_address)
        client_child.wait_for(client_child.stdout, lambda line: line.startswith(protocol.WELCOME_PREFIX))
    assert client_child.wait() == 1
    assert client_child.out_lines[-1] == udp_client.LOST_NOTICE
    assert all("соединени" not in line.lower() for line in client_child.out_lines)
    assert_no_traceback("\n".join(client_child.err_lines))


def test_client_sends_piped_lines_in_order_and_quits_at_eof(udp_server, make_udp_client):
    watcher = make_udp_client(udp_server.address, "Наблюдатель")
    lines = ["Привет всем!", "Как дела?", "Ещё одна строка, с «кавычками»"]
    result = run_module("udp_chat.client", "--port", udp_server.address[1], "--name", "Вася",
                        "--heartbeat", 0.2, input="".join(line + "\n" for line in lines + ["/users"]))
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stderr)

    assert is_notice_about(next_line(watcher.lines), "Вася")
    for line in lines:
        assert next_line(watcher.lines) == f"Вася: {line}"
    assert is_notice_about(next_line(watcher.lines), "Вася")  # left at EOF
    assert client_users(watcher) == ["Наблюдатель"]

    out = result.stdout.splitlines()
    assert out[0].startswith(f"{protocol.WELCOME_PREFIX}, Вася!"), out
    (users,) = [line for line in out if line.startswith(USERS_PREFIX)]
    assert online(users) == ["Наблюдатель", "Вася"]
    assert out[-1].startswith(protocol.GOODBYE_PREFIX), out


def test_client_stops_reading_at_quit(udp_server, make_udp_client):
    watcher = make_udp_client(udp_server.address, "Наблюдатель")
    result = run_module("udp_chat.client", "--port", udp_server.address[1], "--name", "Вася",
                        input="раз\n/quit\nдва\n")
    assert result.returncode == 0, result.stderr
    assert is_notice_about(next_line(watcher.lines), "Вася")
    assert next_line(watcher.lines) == "Вася: раз"
    assert is_notice_about(next_line(watcher.lines), "Вася")  # "два" was never sent
    assert client_users(watcher) == ["Наблюдатель"]


def test_client_to_a_port_where_nothing_listens_exits_1():
    started = time.monotonic()
    result = run_module("udp_chat.client", "--port", dead_udp_port(), "--name", "Вася")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_no_traceback(result.stderr)
    # "Port unreachable" comes back at once; at worst the join timeout runs out.
    assert time.monotonic() - started < config.JOIN_TIMEOUT + TIMEOUT


def test_client_gives_up_when_the_server_does_not_answer():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((LOCALHOST, 0))
        mute.settimeout(TIMEOUT)
        result = run_module("udp_chat.client", "--port", mute.getsockname()[1], "--name", "Вася")
        mute.settimeout(0)  # the client has exited: what it sent is waiting already
        joins = []
        with contextlib.suppress(BlockingIOError):
            while True:
                joins.append(mute.recv(65535))
    assert result.returncode == 1
    *retries, error = result.stderr.strip().splitlines()
    assert "сервер не отвечает" in error, result.stderr
    # The log shows each /join sent again, with the wait that ran out: 0,5 с, 1 с …
    assert len(retries) == len(joins) - 1, result.stderr
    for retry, wait in zip(retries, ["0,5", "1", "2"]):
        assert f"ИНФО Нет ответа на /join за {wait} с — повторяю" in retry, retry
    assert_no_traceback(result.stderr)
    # /join was sent again after 0.5 s, then after 1 s more (0.5, 1.5, 3.5 … < JOIN_TIMEOUT).
    sends = sum(1 for k in range(10) if 0.5 * (2 ** k - 1) < config.JOIN_TIMEOUT)
    assert sends >= 2
    assert joins == ["/join Вася".encode(config.ENCODING)] * sends


def test_client_with_a_refused_name_exits_at_eof_without_traceback(udp_server, make_udp_client):
    watcher = make_udp_client(udp_server.address, "Наблюдатель")
    result = run_module("udp_chat.client", "--port", udp_server.address[1],
                        "--name", "Иван Петров", input="")
    assert result.returncode in (0, 1)
    assert protocol.ERROR_PREFIX in result.stderr  # the server's reason is shown
    assert_no_traceback(result.stderr)
    assert client_users(watcher) == ["Наблюдатель"]


def test_client_asks_again_after_a_taken_name(udp_server, make_udp_client):
    watcher = make_udp_client(udp_server.address, "Аня")
    result = run_module("udp_chat.client", "--port", udp_server.address[1], "--name", "АНЯ",
                        input="Вася\nпривет\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(protocol.ERROR_PREFIX) == 1, result.stderr
    assert is_notice_about(next_line(watcher.lines), "Вася")
    assert next_line(watcher.lines) == "Вася: привет"


# --- Command-line values -------------------------------------------------------------
@pytest.mark.parametrize(
    "module, args",
    [
        ("udp_chat.server", ["--port", "70000"]),
        ("udp_chat.server", ["--client-timeout", "0"]),
        ("udp_chat.server", ["--client-timeout", "-1"]),
        ("udp_chat.server", ["--max-message-bytes", "0"]),
        ("udp_chat.client", ["--port", "70000", "--name", "Вася"]),
        ("udp_chat.client", ["--heartbeat", "0", "--name", "Вася"]),
        ("udp_chat.client", ["--heartbeat", "nan", "--name", "Вася"]),
        ("tcp_chat.server", ["--port", "-5"]),
        ("tcp_chat.server", ["--name-timeout", "0"]),
        ("tcp_chat.server", ["--max-clients", "0"]),
        ("tcp_chat.select_server", ["--port", "-5"]),
        ("tcp_chat.select_server", ["--name-timeout", "0"]),
        ("tcp_chat.select_server", ["--max-clients", "0"]),
        ("tcp_chat.client", ["--port", "65536", "--name", "Вася"]),
    ],
)
def test_out_of_range_values_get_a_usage_error_in_russian(module, args):
    # Zero timeouts would make a socket non-blocking and a server spin; a port
    # over 65535 used to end in an OverflowError traceback.
    result = run_module(module, *args)
    assert result.returncode == 2, result.stderr
    assert_no_traceback(result.stderr)
    assert re.search("[а-яё]", result.stderr.splitlines()[-1]), result.stderr


@posix_signals
@pytest.mark.parametrize("module",
                         ["udp_chat.server", "tcp_chat.server", "tcp_chat.select_server"])
def test_server_started_with_sigint_ignored_still_stops_on_sigint(module):
    # A shell script starts background jobs with SIGINT ignored; the server
    # must still stop on Ctrl+C / kill -INT, as its README says.
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"], cwd=udp_support.REPO_ROOT,
        env=udp_support.child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert BOUND_ADDRESS.search(proc.stderr.readline().decode(config.ENCODING))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
        assert_no_traceback(proc.stderr.read().decode(config.ENCODING))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        proc.stderr.close()


# --- Flags take effect ---------------------------------------------------------------
def test_server_client_timeout_flag_is_used(spawn, make_peer, make_udp_client):
    _, address = start_server(spawn, "--client-timeout", 0.5)
    watcher = make_udp_client(address, "Наблюдатель", heartbeat=0.05)
    silent = make_peer(address)
    silent.join("Молчун")
    assert is_notice_about(next_line(watcher.lines), "Молчун")  # joins
    # With the default CLIENT_TIMEOUT (15 s) this would not come within TIMEOUT (10 s).
    assert config.CLIENT_TIMEOUT > TIMEOUT
    assert is_notice_about(next_line(watcher.lines), "Молчун")  # removed as silent
    assert client_users(watcher) == ["Наблюдатель"]


def test_client_heartbeat_flag_is_used():
    # The test plays the server: it welcomes the client and counts its pings.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fake:
        fake.bind((LOCALHOST, 0))
        fake.settimeout(TIMEOUT)
        child = Child("udp_chat.client", "--port", fake.getsockname()[1], "--name", "Вася",
                      "--heartbeat", 0.1, stdin=subprocess.PIPE)
        try:
            join, client = fake.recvfrom(65535)
            assert join == "/join Вася".encode(config.ENCODING)
            fake.sendto(protocol.encode_line(f"{protocol.WELCOME_PREFIX}, Вася!"), client)
            started = time.monotonic()
            for _ in range(3):  # the default heartbeat (5 s) would send none this soon
                assert fake.recv(65535) == protocol.PING_COMMAND.encode()
            assert time.monotonic() - started < config.HEARTBEAT_INTERVAL
            child.proc.stdin.close()  # EOF: the client says /quit
            while fake.recv(65535) != b"/quit":
                pass  # a ping may come first
            fake.sendto(protocol.encode_line(f"{protocol.GOODBYE_PREFIX}, Вася!"), client)
            assert child.wait() == 0
        finally:
            child.kill()


def test_client_refuses_a_line_too_big_for_a_datagram_and_goes_on(udp_server, make_udp_client):
    watcher = make_udp_client(udp_server.address, "Наблюдатель")
    result = run_module("udp_chat.client", "--port", udp_server.address[1], "--name", "Вася",
                        input="я" * 40000 + "\nпосле\n")
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result.stderr)
    errors = [line for line in result.stdout.splitlines() if line.startswith(protocol.ERROR_PREFIX)]
    assert len(errors) == 1 and "датаграмм" in errors[0], result.stdout
    assert is_notice_about(next_line(watcher.lines), "Вася")
    assert next_line(watcher.lines) == "Вася: после"  # the next line still went out
