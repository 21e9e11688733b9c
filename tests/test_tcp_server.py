"""The wire protocol of the TCP servers, rule by rule, over real sockets.

Every test runs against both servers, ``tcp_chat.server`` (thread per client)
and ``tcp_chat.select_server`` (one thread, ``selectors``): the ``server``,
``make_server`` and ``server_class`` fixtures of ``conftest.py`` are
parametrized over them (test ids ``threads`` and ``select``).

Raw sockets (:class:`RawClient`) where the exact bytes matter,
:class:`tcp_chat.client.ChatClient` elsewhere.  To prove that something did
*not* arrive, tests prefer a marker: a later line that must come next (the
server keeps one order per connection), rather than waiting for silence.
"""

import dataclasses
import inspect
import socket
import threading
import time

import pytest

from chat_common import config
from chat_common import protocol
from conftest import (
    LOCALHOST,
    TIMEOUT,
    RawClient,
    client_sync,
    collect,
    goodbye_line,
    join_notice,
    leave_notice,
    next_line,
    no_line,
    users_line,
    wait_until,
    welcome_line,
)
from tcp_chat.client import ChatClient

MAX = config.MAX_MESSAGE_BYTES


SERVER_THREAD_TARGETS = ("_accept_loop", "_receive_loop", "_send_loop", "_event_loop")


def server_threads():
    """Threads a TCP ChatServer starts.  The threaded server: the accept
    thread and a receiver and a sender per connection; the select server:
    its one event-loop thread.  Unnamed threads are known by the target in
    their default name ("Thread-3 (_send_loop)"); the names "accept", "recv
    HOST:PORT", "send HOST:PORT" and "event loop" count too."""
    return [
        t for t in threading.enumerate()
        if t.name in ("accept", "event loop") or t.name.startswith(("recv ", "send "))
        or t.name.endswith(tuple(f"({target})" for target in SERVER_THREAD_TARGETS))
    ]


def joined(address, make_raw, *names):
    """Raw clients joined in order under ``names``, with join notices consumed."""
    raws = []
    for name in names:
        raw = make_raw(address)
        raw.join(name)
        for earlier in raws:
            assert earlier.read_line() == join_notice(name)
        raws.append(raw)
    return raws


# --- Server object -----------------------------------------------------------------
def test_address_is_host_port_tuple(server):
    assert isinstance(server.address, tuple)
    assert len(server.address) == 2
    host, port = server.address
    assert host == LOCALHOST
    assert isinstance(port, int) and port > 0


def test_defaults_come_from_config(tcp_server_module):
    ChatServer = tcp_server_module.ChatServer
    params = inspect.signature(ChatServer).parameters
    assert params["host"].default == config.HOST
    assert params["port"].default == config.TCP_PORT
    limits = config.TcpLimits()
    assert (limits.max_clients, limits.name_timeout, limits.send_queue_limit,
            limits.send_queue_bytes, limits.max_message_bytes, limits.flush_timeout,
            limits.backlog) == (
        config.MAX_CLIENTS, config.NAME_TIMEOUT, config.SEND_QUEUE_LIMIT,
        config.SEND_QUEUE_BYTES, config.MAX_MESSAGE_BYTES, config.SHUTDOWN_FLUSH_TIMEOUT,
        config.BACKLOG)
    srv = ChatServer(LOCALHOST, 0)
    try:
        assert srv.limits == limits
    finally:
        srv.stop()
    srv = ChatServer(LOCALHOST, 0, name_timeout=0.5, max_clients=7)
    try:
        assert srv.limits == dataclasses.replace(limits, name_timeout=0.5, max_clients=7)
    finally:
        srv.stop()
    with pytest.raises(TypeError):
        ChatServer(LOCALHOST, 0, no_such_limit=1)
    # Every server option is a limit of the same name, with the same default.
    args = tcp_server_module.build_parser().parse_args([])
    assert (args.host, args.port) == (config.HOST, config.TCP_PORT)
    options = {key: value for key, value in vars(args).items()
               if key not in ("host", "port", "verbose")}
    assert options == dataclasses.asdict(limits)


def test_context_manager_starts_and_stops(server_class):
    with server_class(LOCALHOST, 0) as srv:
        raw = RawClient(srv.address)
        assert raw.read_line() == protocol.NAME_PROMPT
    assert raw.read_line() == protocol.SHUTDOWN_NOTICE
    raw.expect_eof()
    raw.close()
    with pytest.raises(OSError):
        socket.create_connection(srv.address, timeout=TIMEOUT).close()


# --- Handshake ------------------------------------------------------------------------
def test_prompt_is_a_notice_line(server, make_raw):
    raw = make_raw(server.address)
    line = raw.read_line()
    assert line == protocol.NAME_PROMPT
    assert line.startswith("*** ")
    raw.expect_silence()  # exactly one line, then the server waits for the name


@pytest.mark.parametrize(
    "name",
    ["", "two words", "a:b", "x" * (config.MAX_NAME_CHARS + 1), "dot.ted", "   "],
    ids=["empty", "space", "colon", "too-long", "dot", "spaces-only"],
)
def test_invalid_name_gets_error_then_prompt(server, make_raw, name):
    raw = make_raw(server.address)
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_line(name)
    assert raw.read_line().startswith("!!! ")
    assert raw.read_line() == protocol.NAME_PROMPT
    # Still in the handshake: a valid name now joins.
    raw.send_line("Верный")
    assert raw.read_line() == welcome_line("Верный")


@pytest.mark.parametrize("command", ["/quit", "/QUIT", " /quit  "])
def test_quit_at_the_name_prompt_says_goodbye_and_closes(server, make_raw, command):
    raw = make_raw(server.address)
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_line(command)
    assert raw.read_line().startswith(protocol.GOODBYE_PREFIX)
    raw.expect_eof()
    assert server.member_count == 0


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\n", b"esc\x1b[1m\n", "c1\u009b".encode() + b"\n", b"z" * (MAX + 1) + b"\n"],
    ids=["invalid-utf8", "escape", "c1", "too-long"],
)
def test_unreadable_name_gets_error_then_prompt(server, make_raw, data):
    raw = make_raw(server.address)
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_bytes(data)
    assert raw.read_line().startswith("!!! ")
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_line("Второй_шанс")
    assert raw.read_line().startswith(protocol.WELCOME_PREFIX)


@pytest.mark.parametrize("taken", ["Анна", "анна", "АННА"])
def test_taken_name_ignoring_case(server, make_raw, taken):
    (anna,) = joined(server.address, make_raw, "Анна")
    raw = make_raw(server.address)
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_line(taken)
    error = raw.read_line()
    assert error.startswith("!!! ") and "занято" in error
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_line("Анна2")
    assert raw.read_line() == welcome_line("Анна", "Анна2")
    assert anna.read_line() == join_notice("Анна2")  # no notice for the refused try


def test_name_timeout_closes_silent_connection(make_server, make_raw):
    server = make_server(name_timeout=0.5)
    raw = make_raw(server.address)
    started = time.monotonic()
    assert raw.read_line() == protocol.NAME_PROMPT
    error = raw.read_line(timeout=TIMEOUT)
    assert error.startswith("!!! ")
    raw.expect_eof()
    assert time.monotonic() - started >= 0.4  # closed by the timeout, not at once


def test_name_timeout_not_extended_by_wrong_names(make_server, make_raw):
    server = make_server(name_timeout=0.5)
    raw = make_raw(server.address)
    started = time.monotonic()
    assert raw.read_line() == protocol.NAME_PROMPT
    raw.send_line("bad name")
    assert raw.read_line().startswith("!!! ")
    assert raw.read_line() == protocol.NAME_PROMPT
    assert raw.read_line().startswith("!!! ")  # the timeout
    raw.expect_eof()
    assert time.monotonic() - started < TIMEOUT


def test_name_timeout_does_not_apply_to_members(make_server, make_raw):
    server = make_server(name_timeout=0.3)
    (member,) = joined(server.address, make_raw, "Молчун")
    member.expect_silence(0.6)  # twice the name timeout, still connected
    member.sync()


def test_client_choosing_a_name_does_not_block_others(server, make_raw, make_client):
    slow_typist = make_raw(server.address)
    assert slow_typist.read_line() == protocol.NAME_PROMPT
    slow_typist.send_bytes("Ва".encode())  # half a name, no newline yet
    silent = make_raw(server.address)  # never says anything
    assert silent.read_line() == protocol.NAME_PROMPT

    anna = make_client(server.address, "Анна")
    boris = make_client(server.address, "Борис")
    assert next_line(anna) == join_notice("Борис")
    anna.send("привет")
    assert next_line(boris) == "Анна: привет"

    slow_typist.send_bytes("ся\n".encode())
    assert slow_typist.read_line() == welcome_line("Анна", "Борис", "Вася")


# --- Join ------------------------------------------------------------------------
def test_welcome_lists_who_is_online_and_others_get_notice(server, make_raw):
    anna = make_raw(server.address)
    first = anna.join("Анна")
    assert first == welcome_line("Анна")
    boris = make_raw(server.address)
    second = boris.join("Борис")
    assert second == welcome_line("Анна", "Борис")
    notice = anna.read_line()
    assert notice.startswith("*** ") and "Борис" in notice
    boris.sync()  # the newcomer gets no notice about himself


# --- Chatting ---------------------------------------------------------------------
def test_broadcast_to_others_without_echo(server, make_raw):
    anna, boris, vera = joined(server.address, make_raw, "Анна", "Борис", "Вера")
    anna.send_line("Всем привет!")
    assert boris.read_line() == "Анна: Всем привет!"
    assert vera.read_line() == "Анна: Всем привет!"
    anna.sync()  # an echo would have come before the /users answer


@pytest.mark.parametrize("blank", [b"\n\r\n\n", b"   \n\t\n \t \t\r\n"], ids=["empty", "spaces"])
def test_empty_and_blank_lines_ignored(server, make_raw, blank):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_bytes(blank)
    anna.send_line("после пустых")
    assert boris.read_line() == "Анна: после пустых"
    anna.sync()  # and no error for the empty or blank lines either


def test_help(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line("/help")
    assert anna.read_line() == protocol.HELP_TEXT
    for command in ("/users", "/msg", "/quit", "/help"):
        assert command in protocol.HELP_TEXT
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"  # /help went to nobody else


def test_users_lists_members_with_count(server, make_raw):
    anna, boris, vera = joined(server.address, make_raw, "Анна", "Борис", "Вера")
    boris.send_line("/users")
    assert boris.read_line() == users_line("Анна", "Борис", "Вера")
    anna.send_line("метка")
    assert vera.read_line() == "Анна: метка"


@pytest.mark.parametrize("target", ["Борис", "борис", "БОРИС"])
def test_private_message(server, make_raw, target):
    anna, boris, vera = joined(server.address, make_raw, "Анна", "Борис", "Вера")
    anna.send_line(f"/msg {target} только тебе")
    assert boris.read_line() == "Анна (лично): только тебе"
    anna.sync()  # no copy to the sender
    anna.send_line("метка")
    assert vera.read_line() == "Анна: метка"  # the third member saw nothing


def test_private_message_unknown_user(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line("/msg Никто привет")
    error = anna.read_line()
    assert error.startswith("!!! ") and "Никто" in error
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"


def test_private_message_without_text(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line("/msg Борис")
    assert anna.read_line().startswith("!!! ")
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"


def test_quit_says_goodbye_then_closes(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line("/quit")
    assert anna.read_line() == goodbye_line("Анна")
    anna.expect_eof()
    assert boris.read_line() == leave_notice("Анна")


@pytest.mark.parametrize("command", ["/dance", "/Users2", "/ msg"])
def test_unknown_command_hints_help(server, make_raw, command):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line(command)
    error = anna.read_line()
    assert error.startswith("!!! ") and "/help" in error
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"  # the command was not broadcast



@pytest.mark.parametrize("ping, pong", [("/ping", protocol.PONG), ("/PING\r", protocol.PONG),
                                        ("/ping 17 123456", "*** pong 17 123456")])
def test_ping_gets_one_pong_and_is_not_broadcast(server, make_raw, ping, pong):
    # The UDP client's heartbeat and the pinger's ping: answered to the sender only.
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line(ping)
    assert anna.read_line() == pong
    anna.sync()  # exactly one answer: a second line would have come before /users's
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"  # nothing was broadcast before it


@pytest.mark.parametrize("command", ["/join Вера", "/JOIN", "/join Анна Вера"])
def test_join_by_a_member_gets_already_in_chat_error(server, make_raw, command):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line(command)
    assert anna.read_line() == protocol.error_line("Вы уже в чате под именем Анна")
    assert anna.sync() == users_line("Анна", "Борис")  # exactly one error; same name
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"  # nobody else heard of it


@pytest.mark.parametrize("command", ["/join Анна", "/JOIN аННА"])
def test_join_by_a_member_with_own_name_gets_the_welcome_again(server, make_raw, command):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line(command)
    assert anna.read_line() == (f"{protocol.WELCOME_PREFIX}, Анна! Сейчас в чате (2): "
                                "Анна, Борис. Список команд: /help")  # as a retransmission
    assert anna.sync() == users_line("Анна", "Борис")  # exactly one answer; same name
    anna.send_line("метка")
    assert boris.read_line() == "Анна: метка"  # no second join notice before it


# --- Leaving --------------------------------------------------------------------
@pytest.mark.parametrize("how", ["quit", "eof", "reset"])
def test_leave_notice_exactly_once(server, make_raw, how):
    anna, boris, vera = joined(server.address, make_raw, "Анна", "Борис", "Вера")
    if how == "quit":
        anna.send_line("/quit")
        assert anna.read_line() == goodbye_line("Анна")
        anna.expect_eof()
        anna.close()
    elif how == "eof":
        anna.close()
    else:
        anna.reset()
    for other in (boris, vera):
        notice = other.read_line()
        assert notice.startswith("*** ") and "Анна" in notice
    # A second notice would arrive before this marker.
    vera.send_line("метка")
    assert boris.read_line() == "Вера: метка"
    boris.send_line("/users")
    assert boris.read_line() == users_line("Борис", "Вера")


def test_name_is_free_again_after_leaving(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.close()
    assert boris.read_line() == leave_notice("Анна")
    again = make_raw(server.address)
    assert again.join("анна") == welcome_line("Борис", "анна")


# --- Framing ---------------------------------------------------------------------------
def test_message_split_over_several_sends(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    data = "Жёлтый ёжик\n".encode()
    # Cut inside "Ж" (2 bytes), inside "ё", and just before the newline.
    pieces = [data[:1], data[1:4], data[4:-1], data[-1:]]
    for piece in pieces[:-1]:
        anna.send_bytes(piece)
        boris.expect_silence(0.05)  # nothing, not even half a line, goes out early
    anna.send_bytes(pieces[-1])
    assert boris.read_line_bytes() == "Анна: Жёлтый ёжик\n".encode()


def test_message_sent_byte_by_byte(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    data = "Щука ЯЁ\n".encode()
    for i in range(len(data)):
        anna.send_bytes(data[i:i + 1])
        if i % 3 == 0:
            anna.expect_silence(0.01)  # give the server a chance to read a lone byte
    assert boris.read_line() == "Анна: Щука ЯЁ"
    anna.sync()  # no error for any partial piece


def test_several_messages_in_one_send(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_bytes("раз\nдва\n\nтри\n/users\n".encode())
    assert boris.read_lines(3) == ["Анна: раз", "Анна: два", "Анна: три"]
    assert anna.read_line() == users_line("Анна", "Борис")


def test_crlf_endings_like_nc_and_telnet(server, make_raw):
    (boris,) = joined(server.address, make_raw, "Борис")
    nc = make_raw(server.address)
    welcome = nc.join("Анна", ending="\r\n")
    assert welcome == welcome_line("Борис", "Анна")  # no "\r" in the name
    assert boris.read_line_bytes() == (join_notice("Анна") + "\n").encode()
    nc.send_bytes("привет из nc\r\n".encode())
    assert boris.read_line_bytes() == "Анна: привет из nc\n".encode()
    nc.send_line("/msg борис лично\r", ending="\n")
    assert boris.read_line_bytes() == "Анна (лично): лично\n".encode()
    nc.send_line("/users", ending="\r\n")
    assert nc.read_line() == users_line("Борис", "Анна")


# --- Bad input ------------------------------------------------------------------------
def too_long_pieces(size, piece):
    data = b"w" * size + b"\n"
    return [data[i:i + piece] for i in range(0, len(data), piece)]


@pytest.mark.parametrize(
    "pieces",
    [
        [b"w" * (MAX + 1) + b"\n"],
        [b"w" * (MAX + 1) + b"\r\n"],
        too_long_pieces(MAX + 1, 1000),
        too_long_pieces(300_000, 8192),  # far more than one recv() and the limit
    ],
    ids=["limit+1", "limit+1-crlf", "limit+1-pieces", "huge-pieces"],
)
def test_too_long_line_refused_connection_usable(server, make_raw, pieces):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    for piece in pieces:
        anna.send_bytes(piece)
    assert anna.read_line() == protocol.error_line(protocol.too_long_text(MAX))
    anna.sync()  # exactly one error per long line
    anna.send_line("ещё жива")
    assert boris.read_line() == "Анна: ещё жива"  # the long line was not broadcast


@pytest.mark.parametrize("ending", [b"\n", b"\r\n"])
def test_line_of_exactly_the_limit_accepted(server, make_raw, ending):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    text = "я" * (MAX // 2)  # two bytes each: exactly MAX bytes
    assert len(text.encode()) == MAX
    anna.send_bytes(text.encode() + ending)
    assert boris.read_line() == f"Анна: {text}"
    anna.sync()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe bad\n",
        "Привет".encode()[:-1] + b"\n",  # cut letter
        "красный \x1b[31mтекст\x1b[0m".encode() + b"\n",  # ESC sequence
        "csi \u009b2J".encode() + b"\n",  # C1 control
        b"del \x7f\n",
        b"nul \x00\n",
        b"bell \x07\n",
    ],
    ids=["invalid-utf8", "truncated-utf8", "esc", "c1", "del", "nul", "bell"],
)
def test_bad_bytes_refused_not_broadcast(server, make_raw, data):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_bytes(data)
    assert anna.read_line().startswith("!!! ")
    anna.sync()
    anna.send_line("чисто")
    assert boris.read_line() == "Анна: чисто"


def test_tab_allowed(server, make_raw):
    anna, boris = joined(server.address, make_raw, "Анна", "Борис")
    anna.send_line("колонка\tещё")
    assert boris.read_line() == "Анна: колонка\tещё"


# --- Order ------------------------------------------------------------------------------
def test_concurrent_senders_one_order_no_interleaving(server, make_client):
    senders_count, per_sender = 4, 40
    names = [f"S{i}" for i in range(senders_count)]
    senders = [make_client(server.address, name) for name in names]
    listeners = [make_client(server.address, name) for name in ("L0", "L1")]
    members = senders + listeners
    # Drain join notices: member k saw everyone who joined after it.
    for k, member in enumerate(members):
        collect(member, len(members) - 1 - k)

    def text(i, j):
        # Long, varying lines make any interleaving of two lines visible.
        return f"{i}-{j}-" + str(i) * (100 + 97 * j % 2900)

    start = threading.Barrier(senders_count)
    errors = []

    def send_all(i):
        try:
            start.wait(TIMEOUT)
            for j in range(per_sender):
                senders[i].send(text(i, j))
        except Exception as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=send_all, args=(i,)) for i in range(senders_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors

    total = senders_count * per_sender
    seen = {}
    for listener, name in zip(listeners, ("L0", "L1")):
        seen[name] = collect(listener, total)
    for i, sender in enumerate(senders):
        seen[names[i]] = collect(sender, total - per_sender)

    reference = seen["L0"]
    assert seen["L1"] == reference
    for i, name in enumerate(names):
        # Every line whole and in the sender's order.
        assert [line for line in reference if line.startswith(f"{name}: ")] == [
            f"{name}: {text(i, j)}" for j in range(per_sender)
        ]
        # Each sender sees the same order, minus its own lines.
        assert seen[name] == [line for line in reference if not line.startswith(f"{name}: ")]
    assert len(reference) == total


# --- Slow reader -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "limit",
    # Each case makes one limit the binding one.
    [
        {"send_queue_limit": 16, "send_queue_bytes": 64 << 20},
        {"send_queue_limit": 100_000, "send_queue_bytes": 64 << 10},
    ],
    ids=["lines", "bytes"],
)
def test_slow_reader_disconnected_others_unaffected(make_server, make_raw, make_client, limit):
    server = make_server(**limit)
    slow = make_raw(server.address, rcvbuf=4096)
    slow.join("Тормоз")
    sender = make_client(server.address, "Быстрый")
    reader = make_client(server.address, "Читатель")
    assert next_line(sender) == join_notice("Читатель")

    payload = "ы" * 1990  # ~4 KB a line fills the slow member's buffers fast
    notices = []
    started = time.monotonic()
    for j in range(5000):
        sender.send(f"{j} {payload}")
        # Every line reaches the attentive reader promptly.
        line = next_line(reader, timeout=2.0)
        while line.startswith("*** "):
            notices.append(line)
            line = next_line(reader, timeout=2.0)
        assert line == f"Быстрый: {j} {payload}"
        if notices:
            break
    else:
        pytest.fail("the slow reader was never disconnected")
    assert time.monotonic() - started < 20

    assert len(notices) == 1
    assert "Тормоз" in notices[0]
    assert notices[0] == leave_notice("Тормоз", protocol.SLOW_READER_REASON)
    assert next_line(sender) == notices[0]

    # The server is alive and the slow member is gone.
    reader.send("/users")
    assert next_line(reader) == users_line("Быстрый", "Читатель")
    newcomer = make_client(server.address, "Новый")
    assert newcomer.handshake[-1] == welcome_line("Быстрый", "Читатель", "Новый")

    # What the slow member gets in the end is a closed connection.
    slow.drain_to_eof()


# --- Connection limit --------------------------------------------------------------------
def test_max_clients_refuses_extra_and_reuses_slot(make_server, make_raw, make_client):
    server = make_server(max_clients=3)
    anna = make_client(server.address, "Анна")
    boris = make_client(server.address, "Борис")
    unnamed = make_raw(server.address)  # counts although it has no name yet
    assert unnamed.read_line() == protocol.NAME_PROMPT

    extra = make_raw(server.address)
    refusal = extra.read_line()
    assert refusal.startswith("!!! ") and "3" in refusal
    extra.expect_eof()
    with pytest.raises(ConnectionError):
        ChatClient(*server.address, "Лишний", timeout=TIMEOUT)

    anna.close()
    assert anna.closed.is_set()
    assert next_line(boris) == leave_notice("Анна")

    # The slot is freed right after the server closes the socket; retry
    # (each try is a full, bounded round trip) until it is reused.
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            vera = make_client(server.address, "Вера")
            break
        except ConnectionError:
            assert time.monotonic() < deadline, "the freed slot was never reused"
    assert vera.handshake[-1] == welcome_line("Борис", "Вера")
    assert next_line(boris) == join_notice("Вера")
    no_line(boris, 0.05)  # no join, leave or error from the refused tries


# --- Stop ---------------------------------------------------------------------------------
def test_stop_notifies_members_then_closes(tcp_server_module, make_raw, make_client):
    before = set(server_threads())
    srv = tcp_server_module.ChatServer(LOCALHOST, 0)
    srv.start()
    try:
        anna, boris = joined(srv.address, make_raw, "Анна", "Борис")
        vera = make_client(srv.address, "Вера")
        choosing = make_raw(srv.address)
        assert choosing.read_line() == protocol.NAME_PROMPT
        for raw in (anna, boris):
            assert raw.read_line() == join_notice("Вера")
        if tcp_server_module.__name__ == "tcp_chat.select_server":
            expected = {"event loop"}  # one thread, however many connections
        else:  # the accept thread, a receiver and a sender per connection
            peers = ["%s:%s" % sock.getsockname()[:2]
                     for sock in (anna.sock, boris.sock, vera.sock, choosing.sock)]
            expected = {"accept"} | {f"{kind} {peer}" for peer in peers
                                     for kind in ("recv", "send")}
        # A receiver thread may start just after its sender has sent the prompt.
        wait_until(lambda: {thread.name for thread in set(server_threads()) - before} == expected,
                   message=f"the server's threads {sorted(expected)}")
    finally:
        srv.stop()
    for raw in (anna, boris, choosing):
        assert raw.read_line() == protocol.SHUTDOWN_NOTICE
        raw.expect_eof()
    assert next_line(vera) == protocol.SHUTDOWN_NOTICE
    assert vera.closed.wait(TIMEOUT)
    no_line(vera, 0)  # no leave notices after the shutdown notice

    started = time.monotonic()
    srv.stop()  # idempotent, and quick the second time
    assert time.monotonic() - started < 1
    assert set(server_threads()) - before == set()


def test_stop_is_bounded_with_a_member_that_never_reads(server_class, make_raw):
    before = set(server_threads())
    srv = server_class(
        LOCALHOST, 0, send_queue_limit=100_000, send_queue_bytes=64 << 20, flush_timeout=0.5
    )
    srv.start()
    try:
        slow = make_raw(srv.address, rcvbuf=4096)
        slow.join("Тормоз")
        sender = make_raw(srv.address)
        sender.join("Болтун")
        # About 6 MB for the slow member: more than the kernel buffers hold,
        # so at stop() the threaded server's sender thread is stuck in
        # sendall(), and the select server's buffer for him is far from empty.
        line = ("щ" * 1990 + "\n").encode()
        sender.send_bytes(line * 1500)
        assert sender.sync() == users_line("Тормоз", "Болтун")  # still a member
        assert set(server_threads()) - before, "the server's threads are not recognised"
    finally:
        started = time.monotonic()
        srv.stop()
        elapsed = time.monotonic() - started
    assert elapsed < 3
    assert set(server_threads()) - before == set()


def test_port_can_be_bound_again_right_after_stop(server_class, make_raw):
    srv = server_class(LOCALHOST, 0)
    srv.start()
    port = srv.address[1]
    try:
        (anna,) = joined(srv.address, make_raw, "Анна")
    finally:
        srv.stop()
    assert anna.read_line() == protocol.SHUTDOWN_NOTICE
    anna.expect_eof()
    # The server closed first, so its side is in TIME_WAIT now.
    with server_class(LOCALHOST, port) as again:
        assert again.address == (LOCALHOST, port)
        raw = make_raw(again.address)
        assert raw.join("Снова").startswith(protocol.WELCOME_PREFIX)


def test_member_count(server, make_client):
    assert server.member_count == 0
    anna = make_client(server.address, "Анна")
    assert server.member_count == 1
    client_sync(anna)
    anna.close()
    wait_until(lambda: server.member_count == 0, message="the member to leave")
