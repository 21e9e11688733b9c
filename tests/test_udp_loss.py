"""Injected loss and the join that survives it (issue 12), over real UDP sockets.

Loopback itself does not lose a handful of datagrams, so every loss here is
injected with a seed and the test knows in advance, from
``random.Random(seed)``, exactly which datagrams are dropped: one number is
drawn per datagram received, in the order of arrival.  Seeds are found by
the tests themselves (the first that gives the pattern wanted), so a test
says which pattern it needs instead of relying on a magic number.
"""

import logging
import random
import re
import socket
import subprocess
import threading
import time

import pytest

from chat_common import config
from chat_common import protocol
from chat_common.loss import InjectedLoss
from tests import udp_support
from tests.udp_support import (
    LOCALHOST,
    TIMEOUT,
    Child,
    is_notice_about,
    next_line,
    online,
    run_module,
)
from udp_chat import client as client_module
from udp_chat import server as server_module
from udp_chat.client import ChatClient

make_udp_server = udp_support.make_udp_server
make_peer = udp_support.make_peer

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

RATE = 0.5
DROPPED = "потеряна (--loss)"  # in the debug line logged for each dropped datagram
BOUND_ADDRESS = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d+)")
RETRY = re.compile(r"Нет ответа на /join за (\S+) с — повторяю")


def drops(seed, rate, count):
    """Which of ``count`` datagrams an ``InjectedLoss(rate, seed)`` drops."""
    numbers = random.Random(seed)
    return [numbers.random() < rate for _ in range(count)]


def seed_for(pattern, rate=RATE):
    """The first seed (from 1, as ``--seed`` allows) whose drops start with
    ``pattern`` (a string: "x" dropped, "." kept, "?" either); returns
    ``(seed, drops)`` with drops covering the pattern."""
    for seed in range(1, 100_000):
        predicted = drops(seed, rate, len(pattern))
        if all(want == "?" or (want == "x") == dropped
               for want, dropped in zip(pattern, predicted)):
            return seed, predicted
    raise AssertionError(f"no seed gives {pattern!r}")


def retries(caplog):
    """The waits (str, as logged) after which the client resent /join."""
    return [RETRY.fullmatch(record.getMessage())[1] for record in caplog.records
            if record.name == "udp_chat.client" and RETRY.fullmatch(record.getMessage())]


def drop_records(caplog, logger, address=None):
    return [record for record in caplog.records if record.name == logger
            and DROPPED in record.getMessage()
            and (address is None or "{}:{}".format(*address[:2]) in record.getMessage())]


# --- InjectedLoss ---------------------------------------------------------------
def test_rate_zero_drops_nothing_and_draws_nothing():
    loss = InjectedLoss(0, seed=7)
    assert not any(loss.drops() for _ in range(1000))
    # Not one number was drawn: at a rate above 0 the sequence starts afresh.
    loss.rate = RATE
    assert [loss.drops() for _ in range(50)] == drops(7, RATE, 50)
    assert not any(InjectedLoss().drops() for _ in range(1000))  # the default


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.3, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("seed", [1, 2, 12345])
def test_seeded_drops_are_exactly_those_of_random_random(rate, seed):
    loss = InjectedLoss(rate, seed)
    assert [loss.drops() for _ in range(500)] == drops(seed, rate, 500)


def test_same_seed_same_drops_other_seed_other_drops():
    first, again, other = InjectedLoss(0.3, 5), InjectedLoss(0.3, 5), InjectedLoss(0.3, 6)
    sequences = [[loss.drops() for _ in range(200)] for loss in (first, again, other)]
    assert sequences[0] == sequences[1] != sequences[2]


# --- The server drops what it receives ------------------------------------------
def test_server_drops_exactly_the_datagrams_the_seed_predicts(make_udp_server, make_peer, caplog):
    # Received in this order: the watcher's /join, the sender's /join, 20
    # messages, the final marker.  Only the messages may be dropped.
    count = 20
    seed, predicted = seed_for(".." + "?" * count + ".")
    assert 0 < sum(predicted[2:2 + count]) < count  # some lost, some not
    caplog.set_level(logging.DEBUG, logger="udp_chat.server")
    chat = make_udp_server(loss=RATE, seed=seed)
    watcher, sender = make_peer(chat.address), make_peer(chat.address)
    watcher.join("Наблюдатель")
    sender.join("Отправитель")
    assert is_notice_about(watcher.recv(), "Отправитель")
    for i in range(count):
        sender.send(f"сообщение {i}")
    sender.send("конец")
    received = []
    while (line := watcher.recv()) != "Отправитель: конец":
        received.append(line)
    assert received == [f"Отправитель: сообщение {i}" for i in range(count)
                        if not predicted[2 + i]]
    # -v: each drop is logged, with the sender's address.
    assert len(drop_records(caplog, "udp_chat.server", sender.address)) == sum(predicted)
    assert len(drop_records(caplog, "udp_chat.server")) == sum(predicted)


def test_server_drops_commands_too_before_anything_else(make_udp_server, make_peer):
    # A dropped /users gets no answer: the datagram is lost before the
    # chat rules see it.  Numbered pings show which ones were answered.
    count = 12
    seed, predicted = seed_for("." + "?" * count + ".")
    assert 0 < sum(predicted[1:1 + count]) < count
    chat = make_udp_server(loss=RATE, seed=seed)
    peer = make_peer(chat.address)
    peer.join("Аня")
    for i in range(count):
        peer.send(f"/ping {i}")
    peer.send("/users")  # kept: its answer ends the replies
    replies = []
    while not (line := peer.recv()).startswith(udp_support.USERS_PREFIX):
        replies.append(line)
    assert replies == [f"{protocol.PONG} {i}" for i in range(count) if not predicted[1 + i]]
    assert online(line) == ["Аня"]


# --- Join with retransmission ---------------------------------------------------------
def test_join_whose_first_two_datagrams_are_dropped_succeeds_with_one_notice(
        make_udp_server, make_peer, caplog):
    # Received in this order: the watcher's /join, the newcomer's three
    # /join (0 s, 0.5 s, 1.5 s), the watcher's /users, the newcomer's /quit.
    seed, predicted = seed_for(".xx...")
    caplog.set_level(logging.DEBUG)
    chat = make_udp_server(loss=RATE, seed=seed)
    watcher = make_peer(chat.address)
    watcher.join("Наблюдатель")
    started = time.monotonic()
    newcomer = ChatClient(*chat.address, "Новичок", heartbeat=3600, timeout=TIMEOUT)
    try:
        took = time.monotonic() - started
        assert newcomer.welcome.startswith(f"{protocol.WELCOME_PREFIX}, Новичок!")
        assert "(2): Наблюдатель, Новичок" in newcomer.welcome
        assert is_notice_about(watcher.recv(), "Новичок")
        assert watcher.users() == ["Наблюдатель", "Новичок"]  # no second notice came first
        assert took >= 0.5 + 1.0 - 0.05  # it waited 0.5 s, then 1 s, before the third try
        assert [wait.replace(",", ".") for wait in retries(caplog)] == ["0.5", "1"]
        dropped = drop_records(caplog, "udp_chat.server", newcomer.sock.getsockname())
        assert len(dropped) == 2
        assert newcomer.lines.empty()
    finally:
        newcomer.close(timeout=TIMEOUT)
    assert is_notice_about(watcher.recv(), "Новичок")  # the /quit was kept: one leave notice


def test_join_whose_welcome_is_dropped_by_the_client_is_welcomed_again(
        make_udp_server, make_peer, caplog):
    # The client's own loss: it drops the first welcome, asks again, and the
    # server takes the second /join with the same name as a retransmission.
    # The client receives: welcome, welcome again, 20 messages, the marker, goodbye.
    count = 20
    seed, predicted = seed_for("x." + "?" * count + "..")
    assert 0 < sum(predicted[2:2 + count]) < count
    caplog.set_level(logging.DEBUG, logger="udp_chat.client")
    chat = make_udp_server()
    sender = make_peer(chat.address)
    sender.join("Отправитель")
    client = ChatClient(*chat.address, "Получатель", heartbeat=3600, timeout=TIMEOUT,
                        loss=RATE, seed=seed)
    try:
        assert client.welcome.startswith(f"{protocol.WELCOME_PREFIX}, Получатель!")
        assert is_notice_about(sender.recv(), "Получатель")
        assert sender.users() == ["Отправитель", "Получатель"]  # exactly one join notice
        assert len(retries(caplog)) == 1
        for i in range(count):
            sender.send(f"сообщение {i}")
        sender.send("конец")
        received = []
        while (line := next_line(client.lines)) != "Отправитель: конец":
            received.append(line)
        assert received == [f"Отправитель: сообщение {i}" for i in range(count)
                            if not predicted[2 + i]]
        assert len(drop_records(caplog, "udp_chat.client")) == sum(predicted[:3 + count])
    finally:
        client.close(timeout=TIMEOUT)
    assert client.closed.is_set()  # the goodbye was kept


def test_client_gives_up_after_timeout_with_growing_gaps(caplog):
    caplog.set_level(logging.INFO, logger="udp_chat.client")
    arrivals = []  # (time.monotonic(), datagram) as the mute server reads them
    done = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((LOCALHOST, 0))
        mute.settimeout(0.05)

        def read_and_ignore():
            while True:
                try:
                    arrivals.append((time.monotonic(), mute.recv(65535)))
                except TimeoutError:
                    if done.is_set():
                        return

        reader = threading.Thread(target=read_and_ignore, daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            with pytest.raises(TimeoutError, match="сервер не отвечает"):
                ChatClient(*mute.getsockname(), "Аня", heartbeat=3600, timeout=1.6)
            took = time.monotonic() - started
        finally:
            done.set()
            reader.join(TIMEOUT)
    assert not reader.is_alive()
    # Sent at 0, 0.5 and 1.5 s; the next would have been at 3.5 s, past 1.6 s.
    assert [data for _, data in arrivals] == ["/join Аня".encode(config.ENCODING)] * 3
    gaps = [later - earlier for (earlier, _), (later, _) in zip(arrivals, arrivals[1:])]
    assert 0.4 <= gaps[0] < 0.5 + TIMEOUT and 0.85 <= gaps[1] < 1.0 + TIMEOUT, gaps
    assert gaps[1] > gaps[0]
    assert 1.6 - 0.05 <= took < 1.6 + TIMEOUT
    assert [wait.replace(",", ".") for wait in retries(caplog)] == ["0.5", "1"]  # none at the end


def test_welcome_to_a_resent_join_is_not_shown_as_a_chat_line():
    # A slow answer, not a lost one: the client resends /join after 0.5 s and
    # the server answers both; the second welcome must not reach the chat.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as slow:
        slow.bind((LOCALHOST, 0))
        slow.settimeout(TIMEOUT)

        def answer_late():
            _, client = slow.recvfrom(65535)
            slow.recvfrom(65535)  # the resent /join: the first answer is "late"
            for line in (f"{protocol.WELCOME_PREFIX}, Аня!", f"{protocol.WELCOME_PREFIX}, Аня!",
                         "Борис: привет"):
                slow.sendto(protocol.encode_line(line), client)

        server = threading.Thread(target=answer_late, daemon=True)
        server.start()
        anya = ChatClient(*slow.getsockname(), "Аня", heartbeat=3600, timeout=TIMEOUT)
        try:
            assert anya.welcome.startswith(protocol.WELCOME_PREFIX)
            assert anya.lines.get(timeout=TIMEOUT) == "Борис: привет"
        finally:
            anya.close(timeout=0.1)
            server.join(TIMEOUT)


# --- Command line -------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["udp_chat.server", "udp_chat.client"])
@pytest.mark.parametrize("args", [["--loss", "1"], ["--loss", "-0.1"], ["--loss", "abc"],
                                  ["--loss", "nan"], ["--seed", "0"], ["--seed", "x"]],
                         ids=lambda args: " ".join(args))
def test_bad_loss_and_seed_get_a_russian_usage_error(module, args):
    result = run_module(module, *args, "--port", "0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "invalid" not in result.stderr and "usage:" not in result.stderr.lower()
    assert result.stderr.startswith("Запуск:"), result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert args[0] in last and re.search("[а-яё]", last), result.stderr


def test_loss_and_seed_are_accepted_by_both_parsers():
    for module in (client_module, server_module):
        args = module.build_parser().parse_args(["--loss", "0.3", "--seed", "7"])
        assert (args.loss, args.seed) == (0.3, 7)
        args = module.build_parser().parse_args([])
        assert (args.loss, args.seed) == (0.0, None)


def test_server_cli_warns_about_injected_loss_and_drops_as_seeded(make_peer):
    # --loss 0.3 --seed 1: the first datagram the server receives is lost.
    seed, rate = 1, 0.3
    predicted = drops(seed, rate, 40)
    assert predicted[:2] == [True, False]
    pings = next(n for n in range(6, 30) if not predicted[2 + n])  # the marker is kept
    child = Child("udp_chat.server", "--port", 0, "--loss", rate, "--seed", seed)
    try:
        bound = child.wait_for(child.stderr, BOUND_ADDRESS.search)
        port = int(BOUND_ADDRESS.search(bound)[2])
        warning = child.wait_for(child.stderr, lambda line: "--loss" in line)
        assert "ВНИМАНИЕ" in warning and "30 %" in warning, warning
        peer = make_peer((LOCALHOST, port))
        peer.send("/join Вася")  # lost
        peer.join("Вася")  # kept: the welcome is the first answer
        for i in range(pings):
            peer.send(f"/ping {i}")
        peer.send("/users")
        replies = []
        while not (line := peer.recv()).startswith(udp_support.USERS_PREFIX):
            replies.append(line)
        assert replies == [f"{protocol.PONG} {i}" for i in range(pings) if not predicted[2 + i]]
        child.proc.terminate()
        child.wait()
    finally:
        child.kill()
    assert "Traceback" not in "\n".join(child.err_lines)


def test_client_cli_loses_what_it_receives_as_seeded(make_udp_server, make_peer):
    # python -m udp_chat.client --loss P --seed N: the client drops its first
    # welcome, asks again, and then drops exactly the predicted messages.
    # It receives: welcome, welcome again, 12 messages, the marker, goodbye.
    count = 12
    seed, predicted = seed_for("x." + "?" * count + "..")
    assert 0 < sum(predicted[2:2 + count]) < count
    chat = make_udp_server()
    sender = make_peer(chat.address)
    sender.join("Отправитель")
    child = Child("udp_chat.client", "--port", chat.address[1], "--name", "Вася",
                  "--heartbeat", 3600, "--loss", RATE, "--seed", seed, stdin=subprocess.PIPE)
    try:
        welcome = child.wait_for(child.stdout, bool)
        assert welcome.startswith(f"{protocol.WELCOME_PREFIX}, Вася!"), welcome
        assert is_notice_about(sender.recv(), "Вася")
        assert sender.users() == ["Отправитель", "Вася"]  # one join notice only
        for i in range(count):
            sender.send(f"сообщение {i}")
        sender.send("конец")
        child.wait_for(child.stdout, lambda line: line == "Отправитель: конец")
        child.proc.stdin.close()  # EOF: /quit, and the goodbye is kept
        assert child.wait() == 0
    finally:
        child.kill()
    shown = [line for line in child.out_lines if line.startswith("Отправитель: ")]
    assert shown == [f"Отправитель: сообщение {i}" for i in range(count)
                     if not predicted[2 + i]] + ["Отправитель: конец"]
    assert child.out_lines[-1].startswith(protocol.GOODBYE_PREFIX), child.out_lines
    assert "Traceback" not in "\n".join(child.err_lines)
