"""The UDP chat server and library client over real sockets on 127.0.0.1.

One test (or one parametrised group) per rule of the UDP issue: joining,
strangers, messages and commands, bad input, liveness, shutdown, logging and
``udp_chat.client.ChatClient``.  The command-line programs are tested as
subprocesses in ``test_udp_cli.py``.

How absence is proved: the server is one thread handling datagrams in the
order they arrive, so when a member's ``/users`` answer (or a later message)
is the next datagram it receives, nothing caused by earlier datagrams was
sent to it.  Only strangers and shutdown need a short wait for silence.
"""

import inspect
import logging
import queue
import socket
import threading
import time

import pytest

from chat_common import config
from chat_common import protocol
from tests import udp_support
from tests.udp_support import (
    LOCALHOST,
    TIMEOUT,
    chat_room,
    dead_udp_port,
    is_notice_about,
    next_line,
    no_line,
    online,
)
from udp_chat import client as client_module
from udp_chat import server as server_module
from udp_chat.client import ChatClient
from udp_chat.server import ChatServer

# Fixtures shared with the other UDP test module (see tests/udp_support.py).
make_udp_server = udp_support.make_udp_server
udp_server = udp_support.udp_server
make_peer = udp_support.make_peer
make_udp_client = udp_support.make_udp_client

# An exception escaping a client or server thread is a failure, not a warning.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

CYRILLIC_MAX = "я" * (config.MAX_MESSAGE_BYTES // 2)
"""A message of exactly MAX_MESSAGE_BYTES bytes: "я" is two bytes in UTF-8."""
assert len(CYRILLIC_MAX.encode(config.ENCODING)) == config.MAX_MESSAGE_BYTES

PING_BYTES = b"/ping"
"""The client's heartbeat datagram, exactly."""


def client_users(client):
    """Send ``/users`` from a :class:`ChatClient`; return who is online."""
    client.send("/users")
    return online(next_line(client.lines))


# --- Life cycle and API ------------------------------------------------------
def test_server_context_manager_address_and_idempotent_stop(make_peer):
    threads_before = set(threading.enumerate())
    with ChatServer(LOCALHOST, 0) as chat:
        host, port = chat.address
        assert isinstance(chat.address, tuple)
        assert (host, type(port)) == (LOCALHOST, int) and port > 0
        assert set(threading.enumerate()) - threads_before, "no server thread started"
        make_peer(chat.address).join("Аня")
    # __exit__ stopped it and joined its thread; stop() again is harmless.
    assert set(threading.enumerate()) - threads_before == set()
    chat.stop()
    chat.stop()
    # The socket is closed: the kernel answers "port unreachable".
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(TIMEOUT)
        probe.connect(chat.address)
        probe.send(b"/join Anya")
        # Windows reports "port unreachable" as ConnectionResetError.
        with pytest.raises((ConnectionRefusedError, ConnectionResetError)):
            probe.recv(65535)


def test_stop_before_start_is_harmless():
    chat = ChatServer(LOCALHOST, 0)
    chat.stop()
    chat.stop()


def test_defaults_come_from_config():
    server_params = inspect.signature(ChatServer).parameters
    assert server_params["port"].default == config.UDP_PORT
    assert server_params["host"].default == config.HOST
    # The limits are keyword arguments named and defaulted by config.UdpLimits.
    assert config.UdpLimits().client_timeout == config.CLIENT_TIMEOUT
    assert config.UdpLimits().max_message_bytes == config.MAX_MESSAGE_BYTES
    chat = ChatServer(LOCALHOST, 0)
    try:
        assert chat.limits == config.UdpLimits()
    finally:
        chat.stop()
    chat = ChatServer(LOCALHOST, 0, client_timeout=2.5)
    try:
        assert chat.limits.client_timeout == 2.5
        assert chat.limits.max_message_bytes == config.MAX_MESSAGE_BYTES
    finally:
        chat.stop()
    with pytest.raises(TypeError):
        ChatServer(LOCALHOST, 0, 2.5)  # keyword only
    with pytest.raises(TypeError):
        ChatServer(LOCALHOST, 0, no_such_limit=1)
    assert inspect.signature(ChatClient).parameters["heartbeat"].default == config.HEARTBEAT_INTERVAL
    server_args = server_module.build_parser().parse_args([])
    assert (server_args.host, server_args.port, server_args.client_timeout) == (
        config.HOST, config.UDP_PORT, config.CLIENT_TIMEOUT)
    client_args = client_module.build_parser().parse_args([])
    assert (client_args.host, client_args.port, client_args.heartbeat) == (
        config.HOST, config.UDP_PORT, config.HEARTBEAT_INTERVAL)


# --- Joining -------------------------------------------------------------------
def test_join_welcomes_with_who_is_online_and_notifies_others(udp_server, make_peer):
    anya = make_peer(udp_server.address)
    welcome = anya.join("Аня")
    assert welcome.startswith(protocol.WELCOME_PREFIX)
    assert "(1): Аня" in welcome

    boris = make_peer(udp_server.address)
    welcome = boris.join("Борис")
    assert "(2): Аня, Борис" in welcome
    notice = anya.recv()
    assert is_notice_about(notice, "Борис") and not notice.startswith(protocol.WELCOME_PREFIX)
    assert boris.users() == ["Аня", "Борис"]
    assert anya.users() == ["Аня", "Борис"]  # and no other datagram came first


@pytest.mark.parametrize("datagram", [
    "/join Иван Петров",  # the name is the whole rest: a space is not allowed
    "/join",
    "/join ",
    "/join " + "я" * (config.MAX_NAME_CHARS + 1),
    "/join Вася:",
    "/join ВАСЯ",  # taken by "Вася", ignoring case
])
def test_invalid_join_gets_one_error_and_does_not_join(udp_server, make_peer, datagram):
    (vasya,) = chat_room(make_peer, udp_server.address, "Вася")
    stranger = make_peer(udp_server.address)
    stranger.send(datagram)
    assert stranger.recv().startswith(protocol.ERROR_PREFIX)
    # Still a stranger: anything else is answered with "join first".
    stranger.send("привет")
    assert stranger.recv() == protocol.JOIN_FIRST
    # The member heard nothing of it: its own answer is the next datagram.
    assert vasya.users() == ["Вася"]


def test_longest_name_is_accepted(udp_server, make_peer):
    name = "я" * config.MAX_NAME_CHARS
    (peer,) = chat_room(make_peer, udp_server.address, name)
    assert peer.users() == [name]


def test_join_again_from_a_joined_address_is_refused(udp_server, make_peer):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send("/join Другая")
    assert anya.recv() == protocol.error_line("Вы уже в чате под именем Аня")
    assert anya.users() == ["Аня", "Борис"]  # one name per address
    assert boris.users() == ["Аня", "Борис"]  # no join or leave notice came first


@pytest.mark.parametrize("again", ["/join Аня", "/JOIN аНЯ", "/join  Аня \r\n"])
def test_join_again_with_own_name_is_a_retransmission(udp_server, make_peer, again):
    # The answer to /join may be lost: the client asks again, and must get
    # the welcome again, while nobody hears of a second join.
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send(again)
    assert anya.recv() == (f"{protocol.WELCOME_PREFIX}, Аня! Сейчас в чате (2): Аня, Борис. "
                           "Список команд: /help")
    assert anya.users() == ["Аня", "Борис"]  # exactly one answer, still one name
    assert boris.users() == ["Аня", "Борис"]  # no join or leave notice came first


# --- Strangers -----------------------------------------------------------------
def test_stranger_gets_exactly_one_short_error_per_datagram(udp_server, make_peer):
    (member,) = chat_room(make_peer, udp_server.address, "Аня")
    stranger = make_peer(udp_server.address)
    join_first = [
        "привет", "/users", "/help", "/msg Аня тайна", "/quit", "/ping", "/unknown", b"",
    ]
    refused = [
        b"\xff\xfe",  # not UTF-8
        b"\x1b[31m",  # a control character
        "я" * config.MAX_MESSAGE_BYTES,  # twice the limit
    ]
    for datagram in join_first + refused:
        stranger.send(datagram)
    replies = stranger.replies_until_marker()
    assert len(replies) == len(join_first) + len(refused), replies
    for reply in replies:
        assert len(reply) <= config.MAX_FIRST_REPLY_BYTES
        assert reply.decode(config.ENCODING).startswith(protocol.ERROR_PREFIX)
    expected_join_first = (protocol.JOIN_FIRST + "\n").encode(config.ENCODING)
    assert replies[: len(join_first)] == [expected_join_first] * len(join_first)
    assert expected_join_first not in replies[len(join_first):]
    stranger.expect_silence()  # nothing after the marker's answer either
    # Nothing was broadcast, and the stranger did not become a member.
    assert member.users() == ["Аня"]


def test_largest_datagram_from_stranger_gets_one_short_error(udp_server, make_peer):
    stranger = make_peer(udp_server.address)
    stranger.send(b"x" * 65507)  # the largest UDP payload over IPv4
    replies = stranger.replies_until_marker()
    assert replies == [(protocol.error_line(protocol.too_long_text()) + "\n").encode(config.ENCODING)]
    assert len(replies[0]) <= config.MAX_FIRST_REPLY_BYTES


def test_error_to_stranger_is_cut_to_512_bytes(udp_server, make_peer, monkeypatch):
    # No real error text is that long today; the cut must still hold if one is.
    monkeypatch.setattr(protocol, "JOIN_FIRST", protocol.error_line("ошибка " * 200))
    stranger = make_peer(udp_server.address)
    stranger.send("привет")
    replies = stranger.replies_until_marker()
    assert len(replies) == 1, replies
    (reply,) = replies
    assert len(reply) <= config.MAX_FIRST_REPLY_BYTES
    text = reply.decode(config.ENCODING)  # cut at a letter boundary: still UTF-8
    assert text.startswith(protocol.ERROR_PREFIX) and text.endswith("\n")
    assert text.count("\n") == 1


# --- Messages --------------------------------------------------------------------
def test_message_goes_to_every_other_member_without_echo(udp_server, make_peer):
    anya, boris, vera = chat_room(make_peer, udp_server.address, "Аня", "Борис", "Вера")
    anya.send("Привет всем!")
    assert boris.recv() == "Аня: Привет всем!"
    assert vera.recv() == "Аня: Привет всем!"
    assert anya.users() == ["Аня", "Борис", "Вера"]  # no echo came first


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_one_datagram_is_one_message_and_one_line_ending_is_dropped(udp_server, make_peer, ending):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send("как  дела?\tхорошо".encode(config.ENCODING) + ending)
    assert boris.recv() == "Аня: как  дела?\tхорошо"


@pytest.mark.parametrize("datagram", [b"", b"\n", b"\r\n"])
def test_empty_datagram_from_member_is_ignored(udp_server, make_peer, datagram):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send(datagram)
    anya.send("после пустого")
    assert boris.recv() == "Аня: после пустого"  # nothing was broadcast before it
    assert anya.users() == ["Аня", "Борис"]  # no reply came first


def test_help_answers_only_the_sender(udp_server, make_peer):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send("/help")
    assert anya.recv() == protocol.HELP_TEXT
    assert boris.users() == ["Аня", "Борис"]


def test_users_lists_members_with_count(udp_server, make_peer):
    anya, boris, vera = chat_room(make_peer, udp_server.address, "Аня", "Борис", "Вера")
    vera.send("/USERS")  # commands ignore case
    assert online(vera.recv()) == ["Аня", "Борис", "Вера"]
    assert anya.users() == ["Аня", "Борис", "Вера"]  # nobody else got the answer


def test_private_message(udp_server, make_peer):
    anya, boris, vera = chat_room(make_peer, udp_server.address, "Аня", "Борис", "Вера")
    anya.send("/msg бОРИС только тебе")  # the name matches ignoring case
    assert boris.recv() == "Аня (лично): только тебе"
    assert anya.users() == ["Аня", "Борис", "Вера"]  # the sender gets no copy
    assert vera.users() == ["Аня", "Борис", "Вера"]  # nor does anyone else

    anya.send("/msg Гена ау")
    error = anya.recv()
    assert error.startswith(protocol.ERROR_PREFIX) and "Гена" in error
    assert boris.users() == ["Аня", "Борис", "Вера"]


def test_unknown_command_gets_error_with_hint(udp_server, make_peer):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send("/танцевать всем")
    error = anya.recv()
    assert error.startswith(protocol.ERROR_PREFIX) and "/help" in error
    assert boris.users() == ["Аня", "Борис"]  # not broadcast


def test_quit_removes_member_at_once(udp_server, make_peer):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send("/quit")
    assert anya.recv().startswith(protocol.GOODBYE_PREFIX)
    notice = boris.recv()
    assert is_notice_about(notice, "Аня")
    assert boris.users() == ["Борис"]  # removed at once, notified exactly once

    # The address is a stranger again, and the name is free.
    anya.send("я ещё тут?")
    assert anya.recv() == protocol.JOIN_FIRST
    assert boris.users() == ["Борис"]
    anya.join("Аня")
    assert is_notice_about(boris.recv(), "Аня")


# --- Bad input from a member -------------------------------------------------------
BAD_DATAGRAMS = {
    "invalid UTF-8": b"\xff\xfe\xfd",
    "cut multibyte letter": "привет".encode(config.ENCODING)[:-1],
    "surrogate": b"\xed\xa0\x80",
    "ESC": "\x1b[2J\x1b[31mкрасный".encode(config.ENCODING),
    "C1 CSI": "\u009b31mкрасный".encode(config.ENCODING),
    "DEL": "удалить\x7f".encode(config.ENCODING),
    "NUL": b"a\x00b",
    "inner newline": "две\nстроки".encode(config.ENCODING),
    "second line ending": b"x\n\n",
    "one byte too long": (CYRILLIC_MAX + "!").encode(config.ENCODING),
    "one byte too long with CRLF": (CYRILLIC_MAX + "!\r\n").encode(config.ENCODING),
}


@pytest.mark.parametrize("datagram", list(BAD_DATAGRAMS.values()), ids=list(BAD_DATAGRAMS))
def test_bad_datagram_from_member_is_refused_and_server_goes_on(udp_server, make_peer, datagram):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send(datagram)
    assert anya.recv().startswith(protocol.ERROR_PREFIX)
    anya.send("всё ещё здесь")
    assert boris.recv() == "Аня: всё ещё здесь"  # nothing broadcast before it
    assert anya.users() == ["Аня", "Борис"]  # one error only, still a member


@pytest.mark.parametrize("ending", ["", "\r\n"])
def test_message_of_exactly_max_bytes_is_broadcast_whole(udp_server, make_peer, ending):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send(CYRILLIC_MAX + ending)
    assert boris.recv() == "Аня: " + CYRILLIC_MAX
    assert anya.users() == ["Аня", "Борис"]  # no error for it


# --- Liveness ---------------------------------------------------------------------
def test_silent_member_is_removed_and_heartbeat_keeps_client(
        make_udp_server, make_peer, make_udp_client):
    # Wide margins (ten heartbeats per timeout) so a busy machine does not
    # starve a heartbeat long enough to drop a live client.
    client_timeout = 1.0
    chat = make_udp_server(client_timeout=client_timeout)
    boris = make_udp_client(chat.address, "Борис", heartbeat=0.1)
    vera = make_udp_client(chat.address, "Вера", heartbeat=0.1)
    # A member who says /quit is gone at once and must not be dropped again later.
    quitter = make_udp_client(chat.address, "Ушедший", heartbeat=0.1)
    quitter.close(timeout=TIMEOUT)
    # The silent member joins last, so its clock starts after all of the above.
    silent = make_peer(chat.address)
    silent.join("Молчун")
    silent_since = time.monotonic()  # its last datagram was sent before this

    assert is_notice_about(next_line(boris.lines), "Вера")
    for client in (boris, vera):
        joined, left = next_line(client.lines), next_line(client.lines)
        assert is_notice_about(joined, "Ушедший") and is_notice_about(left, "Ушедший")
        assert joined != left
        joined, dropped = next_line(client.lines), next_line(client.lines)
        assert is_notice_about(joined, "Молчун") and is_notice_about(dropped, "Молчун")
        assert joined != dropped
        if client is boris:
            # Removed only after the timeout, not before (boris waited for the notice).
            assert time.monotonic() - silent_since >= 0.9 * client_timeout
    assert client_users(vera) == ["Борис", "Вера"]

    # Well past the timeout the pinging clients are still members: nothing
    # arrives meanwhile (no second notice about anyone; a removed client
    # would get "join first" errors for its pings), and /users lists both.
    no_line(boris.lines, 2.5 * client_timeout)
    assert client_users(boris) == ["Борис", "Вера"]
    assert client_users(vera) == ["Борис", "Вера"]

    # The removed address is a stranger now.
    silent.send("я вернулся")
    assert silent.recv() == protocol.JOIN_FIRST
    assert client_users(boris) == ["Борис", "Вера"]


@pytest.mark.parametrize("ping, pong", [("/ping", protocol.PONG), ("/PING\r\n", protocol.PONG),
                                        ("/ping 17 123456", "*** pong 17 123456")])
def test_ping_gets_one_pong_and_is_not_broadcast(udp_server, make_peer, ping, pong):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    anya.send(ping)
    assert anya.recv_bytes() == protocol.encode_line(pong)  # one line in one datagram
    assert anya.users() == ["Аня", "Борис"]  # no second reply came first
    anya.send("после пинга")
    assert boris.recv() == "Аня: после пинга"  # nothing broadcast first


# --- Shutdown ----------------------------------------------------------------------
def test_stop_sends_shutdown_notice_to_every_member(udp_server, make_peer, make_udp_client):
    anya, boris = chat_room(make_peer, udp_server.address, "Аня", "Борис")
    closed = threading.Event()
    # No heartbeat during the test: only the notice itself can close the client.
    vera = make_udp_client(udp_server.address, "Вера", on_close=closed.set, heartbeat=60)
    for peer in (anya, boris):
        assert is_notice_about(peer.recv(), "Вера")
    stranger = make_peer(udp_server.address)
    stranger.send("привет")
    assert stranger.recv() == protocol.JOIN_FIRST

    udp_server.stop()
    assert anya.recv() == protocol.SHUTDOWN_NOTICE
    assert boris.recv() == protocol.SHUTDOWN_NOTICE
    assert vera.closed.wait(TIMEOUT) and closed.is_set()
    assert next_line(vera.lines) == protocol.SHUTDOWN_NOTICE
    stranger.expect_silence()  # only members are told
    vera.close(timeout=TIMEOUT)  # closing after the server left is harmless


# --- Logging -----------------------------------------------------------------------
def test_log_names_address_joins_and_leaves_but_text_only_when_verbose(
        make_udp_server, make_peer, caplog):
    caplog.set_level(logging.INFO, logger="udp_chat.server")
    chat = make_udp_server()
    anya, boris = chat_room(make_peer, chat.address, "Аня", "Борис")
    anya.send("секретный текст")
    assert boris.recv() == "Аня: секретный текст"
    anya.send("/quit")
    assert anya.recv().startswith(protocol.GOODBYE_PREFIX)
    assert is_notice_about(boris.recv(), "Аня")
    chat.stop()
    log = "\n".join(record.getMessage() for record in caplog.records)
    assert "{}:{}".format(*chat.address) in log  # the address actually bound
    assert "Аня" in log and "{}:{}".format(*anya.address) in log  # who joined, from where
    assert "секретный текст" not in log

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="udp_chat.server")
    chat = make_udp_server()
    anya, boris = chat_room(make_peer, chat.address, "Аня", "Борис")
    anya.send("секретный текст")
    assert boris.recv() == "Аня: секретный текст"
    chat.stop()
    assert any("секретный текст" in record.getMessage() for record in caplog.records)


# --- The library client ------------------------------------------------------------
def test_client_joins_sends_receives_and_closes(udp_server, make_udp_client):
    anya = make_udp_client(udp_server.address, "Аня")
    assert anya.welcome.startswith(f"{protocol.WELCOME_PREFIX}, Аня!")
    boris = make_udp_client(udp_server.address, "Борис")
    assert is_notice_about(next_line(anya.lines), "Борис")

    anya.send("Привет, Борис!")
    assert next_line(boris.lines) == "Аня: Привет, Борис!"
    boris.send("/msg аня привет")
    assert next_line(anya.lines) == "Борис (лично): привет"

    anya.close(timeout=TIMEOUT)
    assert anya.closed.is_set()
    assert next_line(anya.lines).startswith(protocol.GOODBYE_PREFIX)
    assert is_notice_about(next_line(boris.lines), "Аня")
    assert client_users(boris) == ["Борис"]
    anya.close(timeout=TIMEOUT)  # idempotent


def test_client_on_line_callback_gets_every_line(udp_server, make_udp_client):
    received = queue.Queue()
    anya = make_udp_client(udp_server.address, "Аня", on_line=received.put)
    boris = make_udp_client(udp_server.address, "Борис")
    assert is_notice_about(next_line(received), "Борис")
    boris.send("раз")
    boris.send("два")
    assert [next_line(received), next_line(received)] == ["Борис: раз", "Борис: два"]
    assert anya.lines.empty()  # with a callback, the queue is not used


def test_client_send_refuses_a_newline(udp_server, make_udp_client):
    anya = make_udp_client(udp_server.address, "Аня")
    with pytest.raises(ValueError):
        anya.send("две\nстроки")


@pytest.mark.parametrize("name", ["Иван Петров", "", "аня"])
def test_client_name_refused(udp_server, make_udp_client, name):
    anya = make_udp_client(udp_server.address, "Аня")
    with pytest.raises(protocol.NameRefused) as refused:
        ChatClient(*udp_server.address, name, timeout=TIMEOUT)
    assert str(refused.value)  # the server's reason, for the user
    assert client_users(anya) == ["Аня"]


def test_client_to_a_port_where_nothing_listens_fails_fast():
    started = time.monotonic()
    with pytest.raises((ConnectionRefusedError, ConnectionResetError, TimeoutError)):
        ChatClient(LOCALHOST, dead_udp_port(), "Аня", timeout=2.0)
    assert time.monotonic() - started < 2.0 + TIMEOUT


def test_client_join_times_out_when_the_server_stays_silent():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((LOCALHOST, 0))
        mute.settimeout(TIMEOUT)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ChatClient(*mute.getsockname(), "Аня", timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 0.3 + TIMEOUT
        assert mute.recv(65535) == "/join Аня".encode(config.ENCODING)


def test_client_pings_and_notices_a_vanished_server():
    """A server that dies without a word: the next /ping gets "port
    unreachable", and the client closes instead of waiting forever."""
    fake = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.bind((LOCALHOST, 0))
    fake.settimeout(TIMEOUT)
    pings = queue.Queue()

    def fake_server():
        try:
            data, address = fake.recvfrom(65535)
            pings.put(data)
            fake.sendto(protocol.encode_line(f"{protocol.WELCOME_PREFIX}, Аня!"), address)
            pings.put(fake.recv(65535))
        except OSError as error:
            pings.put(error)
        finally:
            fake.close()

    thread = threading.Thread(target=fake_server, daemon=True)
    thread.start()
    client = ChatClient(*fake.getsockname(), "Аня", heartbeat=0.05, timeout=TIMEOUT)
    try:
        assert next_line(pings) == "/join Аня".encode(config.ENCODING)
        assert next_line(pings) == PING_BYTES
        thread.join(TIMEOUT)
        assert client.closed.wait(TIMEOUT), "the client did not notice the server is gone"
    finally:
        client.close(timeout=TIMEOUT)



def test_refused_datagrams_still_count_as_signs_of_life(make_udp_server, make_peer):
    # A member whose every datagram is refused is still alive: the rule is
    # "silent for longer than client_timeout", and it is not silent.
    client_timeout = 0.6
    chat = make_udp_server(client_timeout=client_timeout)
    watcher, garbler = chat_room(make_peer, chat.address, "Смотритель", "Путаник")
    refusal = None
    for _ in range(10):  # about 10 * SILENCE_STEP = 2.5 client timeouts
        watcher.send("/ping")  # the watcher stays alive the ordinary way
        assert watcher.recv() == protocol.PONG  # answered, to him only
        garbler.send(b"\xff\xfe")
        reply = garbler.recv()
        assert reply.startswith(protocol.ERROR_PREFIX)
        assert refusal in (None, reply)
        refusal = reply
        garbler.expect_silence(SILENCE_STEP)  # the socket timeout is the clock
    # Had the server dropped him, the watcher's next line would be the notice.
    assert watcher.users() == ["Смотритель", "Путаник"]


SILENCE_STEP = 0.15


def test_client_forgotten_by_the_server_ends_like_a_lost_connection(
        make_udp_server, make_udp_client):
    # A client whose heartbeats stopped reaching the server (a laptop lid
    # closed, say) is removed; its next datagram is answered "join first",
    # and the client must see that it is no longer in the chat.
    chat = make_udp_server(client_timeout=0.5)
    watcher = make_udp_client(chat.address, "Смотритель", heartbeat=0.05)
    ended = threading.Event()
    sleeper = make_udp_client(chat.address, "Соня", heartbeat=3600, on_close=ended.set)
    assert is_notice_about(next_line(watcher.lines), "Соня")
    assert is_notice_about(next_line(watcher.lines), "Соня")  # removed after the silence
    assert not sleeper.closed.is_set()
    sleeper.send("я снова здесь")
    assert sleeper.closed.wait(TIMEOUT)
    assert ended.is_set()
    assert next_line(sleeper.lines) == protocol.JOIN_FIRST
