"""The pinger of both clients and the pong that answers ``/ping`` (issue 12).

``chat_common.pinger`` on its own (counts, formatting, matching answers to
questions), then over real servers: UDP with seeded injected loss (so the
lost pings are known in advance, see ``test_udp_loss.py``), TCP where every
ping is answered, and ``/ping N`` typed into the real command-line clients.
"""

import queue
import random
import re

import pytest

from chat_common import pinger
from chat_common import protocol
from conftest import client_sync, collect, join_notice, leave_notice
from conftest import next_line as tcp_next_line
from tests import udp_support
from tests.udp_support import (
    TIMEOUT,
    is_notice_about,
    next_line,
    online,
)
from tests.udp_support import run_module as run_cli
from udp_chat.client import ChatClient as UdpClient

make_udp_server = udp_support.make_udp_server
udp_server = udp_support.udp_server
make_peer = udp_support.make_peer
make_udp_client = udp_support.make_udp_client

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

RTT_LINE = re.compile(r"пинг (\d+): (\d+,\d\d) мс")
LOST_LINE = re.compile(r"пинг (\d+): потерян")
SUMMARY = re.compile(r"--- отправлено (\d+), получено (\d+), потеряно (\d+) %"
                     r"(?:; RTT мин/сред/макс = (\d+,\d\d)/(\d+,\d\d)/(\d+,\d\d) мс)?")


def ms(text):
    """``"1,25"`` -> 1.25."""
    return float(text.replace(",", "."))


# --- parse_count, milliseconds, summary -----------------------------------------
@pytest.mark.parametrize("typed, count", [
    ("/ping", 10), ("/ping 20", 20), ("/PING 1", 1), ("/ping 100", 100), ("  /ping  7  ", 7),
    ("/ping   ", 10),
])
def test_parse_count_accepts(typed, count):
    assert pinger.parse_count(typed) == count
    assert pinger.DEFAULT_COUNT == 10 and pinger.MAX_COUNT == 100


@pytest.mark.parametrize("typed", ["/ping 0", "/ping 101", "/ping x", "/ping -1", "/ping 1.5",
                                   "/ping 2 3", "/ping 1000000000000"])
def test_parse_count_refuses_with_a_russian_reason(typed):
    with pytest.raises(protocol.ProtocolError) as refused:
        pinger.parse_count(typed)
    assert str(refused.value) == "Формат: /ping [N], N — от 1 до 100"


@pytest.mark.parametrize("seconds, shown", [
    (0.00042, "0,42"), (0, "0,00"), (0.0123456, "12,35"), (1.5, "1500,00"), (0.000004, "0,00"),
])
def test_milliseconds_with_a_decimal_comma(seconds, shown):
    assert pinger.milliseconds(seconds) == shown


def test_summary_like_the_classic_ping():
    assert pinger.summary(3, [0.001, 0.002]) == (
        "--- отправлено 3, получено 2, потеряно 33 %; RTT мин/сред/макс = 1,00/1,50/2,00 мс")
    assert pinger.summary(10, [0.0005] * 10) == (
        "--- отправлено 10, получено 10, потеряно 0 %; RTT мин/сред/макс = 0,50/0,50/0,50 мс")
    # Nothing received: no RTT at all (there is no minimum of nothing).
    assert pinger.summary(10, []) == "--- отправлено 10, получено 0, потеряно 100 %"


@pytest.mark.parametrize("sent, received, percent", [
    (3, 1, 67), (3, 2, 33), (100, 99, 1), (100, 1, 99), (7, 6, 14), (6, 1, 83), (1, 1, 0),
])
def test_summary_loss_percent_is_rounded(sent, received, percent):
    line = pinger.summary(sent, [0.001] * received)
    assert line.startswith(f"--- отправлено {sent}, получено {received}, потеряно {percent} %")


# --- set_aside --------------------------------------------------------------------
@pytest.mark.parametrize("line, aside, kept", [
    ("*** pong 1 2", True, True),
    ("*** pong 17 123456", True, True),
    ("*** pong", True, False),  # the heartbeat's answer: dropped entirely
    ("*** pong входит в чат", False, False),  # a member named "pong"
    ("*** pong выходит из чата", False, False),
    ("pong: *** pong 1 2", False, False),
    ("*** pong 1", False, False),
    ("*** pong 1 2 3", False, False),
    ("*** pongs", False, False),
    ("!!! pong 1 2", False, False),
    ("*** Сейчас в чате (1): pong", False, False),
])
def test_set_aside_takes_only_answers_to_pings(line, aside, kept):
    pongs = queue.Queue()
    assert pinger.set_aside(line, pongs) is aside
    assert (list(pongs.queue) == [line]) is kept and pongs.qsize() == int(kept)


# --- ping() against a stand-in client --------------------------------------------
class AnsweringClient:
    """``send``/``pongs`` as the real clients have them; answers at once every
    ping but those in ``silent`` (seq numbers), and answers ``stale`` ones
    with another run's number, as a late answer of an earlier run would."""

    def __init__(self, silent=(), stale=()):
        self.sent = []
        self.pongs = queue.Queue()
        self.silent, self.stale = set(silent), set(stale)

    def send(self, text):
        self.sent.append(text)
        match = re.fullmatch(r"/ping (\d+) (\d+)", text)
        assert match, text
        seq, run = int(match[1]), int(match[2])
        if seq in self.stale:
            self.pongs.put(f"{protocol.PONG} {seq} {run + 1}")
        elif seq not in self.silent:
            self.pongs.put(f"{protocol.PONG} {seq} {run}")


def test_ping_matches_each_answer_to_its_question():
    client = AnsweringClient(silent={2}, stale={4})
    shown = []
    round_trips = pinger.ping(client, 5, shown.append, interval=0, timeout=0.05)
    assert len(round_trips) == 3
    runs = {text.split()[2] for text in client.sent}
    assert len(runs) == 1  # one run number for the whole run
    assert [text.split()[1] for text in client.sent] == ["1", "2", "3", "4", "5"]
    assert [bool(RTT_LINE.fullmatch(line)) for line in shown[:5]] == [True, False, True, False, True]
    assert shown[1] == "пинг 2: потерян" and shown[3] == "пинг 4: потерян"
    assert shown[5].startswith("--- отправлено 5, получено 3, потеряно 40 %; RTT")
    assert len(shown) == 6


# --- Pongs over real servers ---------------------------------------------------------
def test_udp_client_sets_pongs_aside_and_drops_the_heartbeat_answers(udp_server):
    got = queue.Queue()
    # Heartbeats every 50 ms: their answers keep coming during the test.
    client = UdpClient(*udp_server.address, "Аня", got.put, heartbeat=0.05, timeout=TIMEOUT)
    try:
        client.send(protocol.PING_COMMAND)  # what a heartbeat sends, exactly
        client.send("/ping 7 8")
        client.send("/users")
        assert online(next_line(got)) == ["Аня"]  # no pong came first
        assert client.pongs.get(timeout=TIMEOUT) == "*** pong 7 8"
        assert client.pongs.empty()  # the bare pongs were not kept
        assert client.lines.empty()
    finally:
        client.close(timeout=TIMEOUT)
    assert client.pongs.empty()


def test_udp_client_lines_queue_gets_no_pong(udp_server, make_udp_client):
    client = make_udp_client(udp_server.address, "Аня", heartbeat=0.05)
    client.send(protocol.PING_COMMAND)
    client.send("/ping 1 2")
    client.send("/users")
    assert online(next_line(client.lines)) == ["Аня"]
    assert client.pongs.get(timeout=TIMEOUT) == "*** pong 1 2"


def test_tcp_client_sets_pongs_aside(server, make_client):
    got = queue.Queue()
    client = make_client(server.address, "Анна", on_line=got.put)
    assert next_line(got) == protocol.NAME_PROMPT  # the handshake, shown
    assert next_line(got).startswith(protocol.WELCOME_PREFIX)
    client.send("/ping")
    client.send("/ping 7 8")
    client.send("/users")
    assert online(next_line(got)) == ["Анна"]
    assert client.pongs.get(timeout=TIMEOUT) == "*** pong 7 8" and client.pongs.empty()
    plain = make_client(server.address, "Борис")
    plain.send("/ping")
    plain.send("/ping 3 4")
    assert online(client_sync(plain)) == ["Анна", "Борис"]
    assert plain.pongs.get(timeout=TIMEOUT) == "*** pong 3 4" and plain.pongs.empty()


def test_udp_member_named_pong_is_still_announced(udp_server, make_udp_client, make_peer):
    watcher = make_udp_client(udp_server.address, "Наблюдатель", heartbeat=0.05)
    pong = make_peer(udp_server.address)
    pong.join("pong")
    assert next_line(watcher.lines) == "*** pong входит в чат"
    pong.send("привет")
    assert next_line(watcher.lines) == "pong: привет"
    pong.send("/quit")
    assert next_line(watcher.lines) == "*** pong выходит из чата"
    assert watcher.pongs.empty()


def test_tcp_member_named_pong_is_still_announced(server, make_client):
    watcher = make_client(server.address, "Наблюдатель")
    pong = make_client(server.address, "pong")
    assert tcp_next_line(watcher) == "*** pong входит в чат"
    pong.close(timeout=TIMEOUT)
    assert tcp_next_line(watcher) == "*** pong выходит из чата"
    assert watcher.pongs.empty()


# --- The pinger over real servers -------------------------------------------------
def drops(seed, rate, count):
    numbers = random.Random(seed)
    return [numbers.random() < rate for _ in range(count)]


def check_run(shown, round_trips, count, lost, timeout):
    """``shown`` lines of a run of ``count`` pings of which the numbers in
    ``lost`` (a set) were lost; ``round_trips`` as ping() returned them."""
    assert len(shown) == count + 1, shown
    for seq, line in enumerate(shown[:-1], start=1):
        if seq in lost:
            assert line == f"пинг {seq}: потерян"
        else:
            assert (match := RTT_LINE.fullmatch(line)), line
            assert int(match[1]) == seq and 0 <= ms(match[2]) < timeout * 1000
    received = count - len(lost)
    assert len(round_trips) == received
    percent = round(100 * len(lost) / count)
    assert shown[-1].startswith(
        f"--- отправлено {count}, получено {received}, потеряно {percent} %"), shown[-1]
    summary = SUMMARY.fullmatch(shown[-1])
    assert summary, shown[-1]
    if received:
        low, mean, high = (ms(summary[i]) for i in (4, 5, 6))
        assert low <= mean <= high
        assert summary[4] == pinger.milliseconds(min(round_trips))
        assert summary[6] == pinger.milliseconds(max(round_trips))
    else:
        assert summary[4] is None


def test_udp_pinger_loses_exactly_what_the_seed_predicts(make_udp_server):
    # The server receives: /join, 10 pings, /users, /quit (no heartbeats:
    # they would draw numbers too).  The client itself drops nothing.
    count, rate = 10, 0.5
    seed = next(seed for seed in range(1, 10_000)
                if (d := drops(seed, rate, count + 3))[0] is False and not any(d[-2:])
                and 2 <= sum(d[1:1 + count]) <= 4)
    predicted = drops(seed, rate, count + 3)
    lost = {seq for seq in range(1, count + 1) if predicted[seq]}
    chat = make_udp_server(loss=rate, seed=seed)
    client = UdpClient(*chat.address, "Аня", heartbeat=3600, timeout=TIMEOUT)
    try:
        shown = []
        round_trips = pinger.ping(client, count, shown.append, interval=0.05, timeout=0.4)
        check_run(shown, round_trips, count, lost, timeout=0.4)
        client.send("/users")
        assert online(next_line(client.lines)) == ["Аня"]  # no pong leaked into the chat
        assert client.pongs.empty()
    finally:
        client.close(timeout=TIMEOUT)


def test_tcp_pinger_gets_every_answer(server, make_client):
    client = make_client(server.address, "Анна")
    shown = []
    round_trips = pinger.ping(client, 5, shown.append, interval=0.02, timeout=TIMEOUT)
    check_run(shown, round_trips, 5, set(), timeout=TIMEOUT)
    assert shown[-1].startswith("--- отправлено 5, получено 5, потеряно 0 %; RTT мин/сред/макс = ")
    assert online(client_sync(client)) == ["Анна"]
    assert client.pongs.empty()


# --- /ping typed in the command-line clients -------------------------------------------
def check_cli_run(stdout, welcome_name):
    out = stdout.splitlines()
    # The TCP client shows the handshake from its receiver thread, so the
    # refusal of "/ping x" (main thread) may come before or after it.
    assert sum(line.startswith(f"{protocol.WELCOME_PREFIX}, {welcome_name}!") for line in out) == 1
    assert "!!! Формат: /ping [N], N — от 1 до 100" in out  # "/ping x": refused, nothing sent
    pings = [line for line in out if line.startswith("пинг ")]
    assert [RTT_LINE.fullmatch(line)[1] for line in pings] == ["1", "2"], out
    (summary,) = [line for line in out if line.startswith("--- ")]
    assert summary.startswith("--- отправлено 2, получено 2, потеряно 0 %; RTT мин/сред/макс = ")
    assert SUMMARY.fullmatch(summary), summary
    assert out.index(summary) == out.index(pings[-1]) + 1
    assert not any(line.startswith(protocol.PONG) for line in out), out  # answers not shown
    assert out[-1].startswith(protocol.GOODBYE_PREFIX), out


def test_udp_cli_typed_ping_measures_and_sends_no_chat_message(udp_server, make_peer):
    (watcher,) = udp_support.chat_room(make_peer, udp_server.address, "Наблюдатель")
    result = run_cli("udp_chat.client", "--port", udp_server.address[1], "--name", "Вася",
                     "--heartbeat", 3600, input="/ping x\n/ping 2\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    check_cli_run(result.stdout, "Вася")
    assert is_notice_about(watcher.recv(), "Вася")  # joins
    assert is_notice_about(watcher.recv(), "Вася")  # leaves at EOF: nothing in between
    assert watcher.users() == ["Наблюдатель"]


def test_tcp_cli_typed_ping_measures_and_sends_no_chat_message(server, make_client):
    watcher = make_client(server.address, "Наблюдатель")
    result = run_cli("tcp_chat.client", "--host", server.address[0], "--port", server.address[1],
                     "--name", "Петя", input="/ping x\n/ping 2\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_cli_run(result.stdout, "Петя")
    assert collect(watcher, 2) == [join_notice("Петя"), leave_notice("Петя")]
    client_sync(watcher)  # and nothing else came in between
