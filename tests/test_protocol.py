"""Unit tests of chat_common.protocol and chat_common.framing: the chat rules
and the cutting of a byte stream into lines, with no sockets at all."""

import unicodedata

import pytest

from chat_common import config
from chat_common import protocol
from chat_common.framing import LINE_TOO_LONG, LineFramer
from chat_common.protocol import (
    ChatRoom,
    MessageRefused,
    NameRefused,
    decode_message,
    validate_name,
)


# --- LineFramer ------------------------------------------------------------------
def feed_all(framer, chunks):
    """Feed ``chunks`` one after another; return all events, checking the bound."""
    events = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
        assert framer.buffered <= framer.max_line_bytes + 1
    return events


def byte_by_byte(data):
    return [data[i:i + 1] for i in range(len(data))]


def test_framer_one_line():
    assert LineFramer().feed(b"hello\n") == [b"hello"]


def test_framer_keeps_unfinished_tail():
    framer = LineFramer()
    assert framer.feed(b"hel") == []
    assert framer.buffered == 3
    assert framer.feed(b"lo\nwor") == [b"hello"]
    assert framer.feed(b"ld\n") == [b"world"]
    assert framer.buffered == 0


def test_framer_byte_by_byte():
    data = "Привет, мир!\nвторая\n".encode()
    assert feed_all(LineFramer(), byte_by_byte(data)) == [
        "Привет, мир!".encode(),
        "вторая".encode(),
    ]


def test_framer_several_lines_in_one_chunk():
    assert LineFramer().feed(b"one\ntwo\n\nthree\n") == [b"one", b"two", b"", b"three"]


def test_framer_cut_inside_cyrillic_letter():
    data = "Жёлтый\n".encode()
    cut = 1  # "Ж" is two bytes: the cut falls between them
    framer = LineFramer()
    assert framer.feed(data[:cut]) == []
    events = framer.feed(data[cut:])
    assert events == ["Жёлтый".encode()]
    assert events[0].decode() == "Жёлтый"


@pytest.mark.parametrize("cut", range(1, len("ёж\n".encode())))
def test_framer_every_cut_point(cut):
    data = "ёж\n".encode()
    events = feed_all(LineFramer(), [data[:cut], data[cut:]])
    assert [e.decode() for e in events] == ["ёж"]


def test_framer_keeps_carriage_return_for_decoder():
    # The framer only cuts; decode_message drops the \r.
    events = LineFramer().feed(b"nc line\r\n")
    assert events == [b"nc line\r"]
    assert decode_message(events[0]) == "nc line"


def test_framer_line_of_exactly_the_limit_accepted():
    framer = LineFramer(10)
    assert framer.feed(b"a" * 10 + b"\n") == [b"a" * 10]


def test_framer_line_of_exactly_the_limit_with_crlf_accepted():
    framer = LineFramer(10)
    events = feed_all(framer, byte_by_byte(b"a" * 10 + b"\r\n"))
    assert events == [b"a" * 10 + b"\r"]


def test_framer_line_of_limit_plus_one_refused():
    framer = LineFramer(10)
    assert framer.feed(b"a" * 11 + b"\n") == [LINE_TOO_LONG]
    assert framer.feed(b"ok\n") == [b"ok"]


def test_framer_line_of_limit_plus_one_with_crlf_refused():
    assert LineFramer(10).feed(b"a" * 11 + b"\r\n") == [LINE_TOO_LONG]


def test_framer_default_limit_is_config():
    assert LineFramer().max_line_bytes == config.MAX_MESSAGE_BYTES


def test_framer_too_long_line_split_over_many_feeds():
    framer = LineFramer(10)
    chunks = [b"x" * 7] * 20 + [b"x\ny", b"es\n"]
    events = feed_all(framer, chunks)
    assert events == [LINE_TOO_LONG, b"yes"]


def test_framer_too_long_line_byte_by_byte_one_event_bounded_buffer():
    framer = LineFramer(16)
    data = b"z" * 1000 + b"\n" + b"after\n"
    events = feed_all(framer, byte_by_byte(data))
    assert events.count(LINE_TOO_LONG) == 1
    assert events == [LINE_TOO_LONG, b"after"]


def test_framer_huge_chunk_never_buffered():
    framer = LineFramer(100)
    events = framer.feed(b"q" * 100_000)
    assert events == [LINE_TOO_LONG]
    assert framer.buffered <= 101
    assert framer.feed(b"q" * 100_000) == []  # still the same line: no second event
    assert framer.buffered <= 101
    assert framer.feed(b"q\nnext\n") == [b"next"]


def test_framer_too_long_then_good_lines_in_one_chunk():
    framer = LineFramer(5)
    assert framer.feed(b"short\n" + b"l" * 50 + b"\nok\n") == [b"short", LINE_TOO_LONG, b"ok"]


def test_framer_carriage_return_waiting_for_newline_at_limit():
    # The limit line plus its \r may wait for the \n: that is the "+ 1".
    framer = LineFramer(4)
    assert framer.feed(b"abcd\r") == []
    assert framer.buffered == 5
    assert framer.feed(b"\n") == [b"abcd\r"]


# --- decode_message --------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, text",
    [
        (b"plain", "plain"),
        (b"with newline\n", "with newline"),
        (b"crlf\r\n", "crlf"),
        (b"cr only\r", "cr only"),
        ("Привет, мир".encode(), "Привет, мир"),
        (b"tab\tinside", "tab\tinside"),
        (b"", ""),
        ("emoji 🙂 and ё".encode(), "emoji 🙂 and ё"),
    ],
)
def test_decode_message_accepts(raw, text):
    assert decode_message(raw) == text


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe",
        "Привет".encode()[:-1],  # cut inside the last letter
        b"\xc0\xaf",  # overlong encoding of "/"
        b"\xed\xa0\x80",  # a UTF-16 surrogate
    ],
    ids=["ff-fe", "truncated", "overlong", "surrogate"],
)
def test_decode_message_refuses_invalid_utf8(raw):
    with pytest.raises(MessageRefused, match="UTF-8"):
        decode_message(raw)


@pytest.mark.parametrize(
    "text",
    [
        "\x1b[31mred",  # ESC: terminal escape sequence
        "nul\x00byte",
        "bell\x07",
        "\x08backspace",
        "form\x0cfeed",
        "inner\rcr",
        "inner\nlf",
        "del\x7f",
        "csi\x9b2J",  # C1 CSI
        "c1 \x80 first",
        "c1 \x9f last",
    ],
)
def test_decode_message_refuses_control_characters(text):
    with pytest.raises(MessageRefused):
        decode_message(text.encode())


def test_decode_message_every_code_point_up_to_07ff():
    # All one- and two-byte UTF-8 (C0, DEL, C1 and the Latin-1 and Cyrillic
    # letters around them) inside a line: exactly the controls but tab are
    # refused.  \n never occurs inside a framed line.
    for code in range(0x800):
        if code == 0x0A:
            continue
        raw = f"a{chr(code)}b".encode()
        control = (code < 0x20 and code != 0x09) or 0x7F <= code <= 0x9F
        if control:
            with pytest.raises(MessageRefused):
                decode_message(raw)
        else:
            assert decode_message(raw) == f"a{chr(code)}b", hex(code)


def test_decode_message_nbsp_just_above_c1_allowed():
    assert decode_message("a\u00a0b".encode()) == "a\u00a0b"


def test_decode_message_length_limit_in_bytes():
    assert decode_message(b"a" * 10, max_bytes=10) == "a" * 10
    assert decode_message(b"a" * 10 + b"\r\n", max_bytes=10) == "a" * 10
    with pytest.raises(MessageRefused, match="10"):
        decode_message(b"a" * 11, max_bytes=10)
    # Counted in bytes, not characters: five Cyrillic letters are ten bytes.
    assert decode_message(("я" * 5).encode(), max_bytes=10) == "я" * 5
    with pytest.raises(MessageRefused):
        decode_message(("я" * 6).encode(), max_bytes=10)


def test_decode_message_default_limit_is_config():
    assert decode_message(b"a" * config.MAX_MESSAGE_BYTES)
    with pytest.raises(MessageRefused):
        decode_message(b"a" * (config.MAX_MESSAGE_BYTES + 1))


def test_refusals_are_protocol_errors_with_russian_text():
    with pytest.raises(protocol.ProtocolError) as info:
        decode_message(b"\xff")
    assert any("а" <= ch <= "я" for ch in str(info.value).lower())


# --- validate_name ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["Вася", "anna", "Ελένη", "user_1", "a-b", "Ёж", "x", "7", "Z" * config.MAX_NAME_CHARS],
)
def test_validate_name_accepts(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "пуст"),
        ("a" * (config.MAX_NAME_CHARS + 1), str(config.MAX_NAME_CHARS)),
        ("two words", "' '"),
        ("a:b", "':'"),
        ("tab\there", "'\\t'"),
        ("dot.name", "'.'"),
        ("esc\x1b", "'\\x1b'"),
        ("smile🙂", "🙂"),
    ],
)
def test_validate_name_refuses(name, reason):
    with pytest.raises(NameRefused) as info:
        validate_name(name)
    assert reason in str(info.value)


def test_validate_name_normalizes_to_nfc():
    decomposed = "\u0418\u0306о"  # "Й" typed as "И" + combining breve
    assert decomposed != "\u0419о"
    assert validate_name(decomposed) == "\u0419о"
    assert unicodedata.is_normalized("NFC", validate_name(decomposed))


def test_validate_name_counts_characters_not_bytes():
    name = "Ж" * config.MAX_NAME_CHARS  # 64 bytes, 32 characters
    assert validate_name(name) == name


# --- ChatRoom -------------------------------------------------------------------------
def lines_for(room, deliveries, key):
    """Lines of ``deliveries`` that member ``key`` gets, in order."""
    return [d.line for d in deliveries if key in room.recipients(d)]


@pytest.fixture
def room():
    """A room with members "a" (Анна) and "b" (Борис) joined in that order."""
    room = ChatRoom()
    room.join("a", "Анна")
    room.join("b", "Борис")
    return room


def test_join_welcomes_newcomer_with_member_list():
    room = ChatRoom()
    first = room.join("a", "Анна")
    (welcome,) = lines_for(room, first, "a")
    assert welcome.startswith(protocol.WELCOME_PREFIX)
    assert "(1): Анна" in welcome
    assert "/help" in welcome
    second = room.join("b", "Борис")
    welcome = lines_for(room, second, "b")
    assert len(welcome) == 1
    assert welcome[0].startswith(protocol.WELCOME_PREFIX)
    assert "(2): Анна, Борис" in welcome[0]


def test_join_notice_goes_to_others_not_newcomer(room):
    deliveries = room.join("c", "Вера")
    (notice,) = lines_for(room, deliveries, "a")
    assert notice.startswith(protocol.NOTICE_PREFIX) and "Вера" in notice
    assert lines_for(room, deliveries, "b") == [notice]
    newcomer = lines_for(room, deliveries, "c")
    assert len(newcomer) == 1 and newcomer[0].startswith(protocol.WELCOME_PREFIX)


def test_join_keeps_names_in_order(room):
    assert room.names() == ["Анна", "Борис"]
    assert len(room) == 2
    assert "a" in room and "z" not in room
    assert room.name_of("b") == "Борис"


@pytest.mark.parametrize("taken", ["Анна", "анна", "АННА", "аННа"])
def test_join_names_unique_ignoring_case(room, taken):
    with pytest.raises(NameRefused, match="занято"):
        room.join("c", taken)
    assert "c" not in room
    assert room.names() == ["Анна", "Борис"]


def test_join_refuses_invalid_name():
    room = ChatRoom()
    with pytest.raises(NameRefused):
        room.join("a", "bad name")
    assert len(room) == 0


def test_join_nfc_equal_names_collide():
    room = ChatRoom()
    room.join("a", "\u0419о")  # precomposed "Й"
    with pytest.raises(NameRefused):
        room.join("b", "\u0418\u0306о")  # "И" + combining breve


def test_join_same_key_twice_is_an_error(room):
    with pytest.raises(ValueError):
        room.join("a", "Другое")


def test_public_message_format_and_no_echo(room):
    room.join("c", "Вера")
    outcome = room.handle("a", "Всем привет!")
    assert not outcome.close
    assert lines_for(room, outcome.deliveries, "b") == ["Анна: Всем привет!"]
    assert lines_for(room, outcome.deliveries, "c") == ["Анна: Всем привет!"]
    assert lines_for(room, outcome.deliveries, "a") == []


def test_text_that_looks_like_a_prefix_is_still_public(room):
    outcome = room.handle("a", "*** fake notice")
    assert lines_for(room, outcome.deliveries, "b") == ["Анна: *** fake notice"]


def test_empty_text_ignored(room):
    outcome = room.handle("a", "")
    assert outcome.deliveries == [] and not outcome.close


def test_help(room):
    outcome = room.handle("a", "/help")
    assert lines_for(room, outcome.deliveries, "a") == [protocol.HELP_TEXT]
    assert lines_for(room, outcome.deliveries, "b") == []
    for command in ("/users", "/msg", "/quit", "/help"):
        assert command in protocol.HELP_TEXT


def test_commands_ignore_case(room):
    outcome = room.handle("a", "/HELP")
    assert lines_for(room, outcome.deliveries, "a") == [protocol.HELP_TEXT]


def test_users_lists_members_with_count(room):
    outcome = room.handle("b", "/users")
    (line,) = lines_for(room, outcome.deliveries, "b")
    assert line.startswith(protocol.NOTICE_PREFIX)
    assert "(2): Анна, Борис" in line
    assert lines_for(room, outcome.deliveries, "a") == []


def test_private_message(room):
    room.join("c", "Вера")
    outcome = room.handle("a", "/msg Борис секрет, только тебе")
    assert lines_for(room, outcome.deliveries, "b") == ["Анна (лично): секрет, только тебе"]
    assert lines_for(room, outcome.deliveries, "a") == []  # no copy to the sender
    assert lines_for(room, outcome.deliveries, "c") == []


@pytest.mark.parametrize("target", ["борис", "БОРИС", "бОрИс"])
def test_private_message_target_ignores_case(room, target):
    outcome = room.handle("a", f"/msg {target} привет")
    assert lines_for(room, outcome.deliveries, "b") == ["Анна (лично): привет"]


def test_private_message_extra_spaces(room):
    outcome = room.handle("a", "/msg   Борис   привет  ")
    assert lines_for(room, outcome.deliveries, "b") == ["Анна (лично): привет"]


def test_private_message_unknown_target(room):
    outcome = room.handle("a", "/msg Никто привет")
    lines = lines_for(room, outcome.deliveries, "a")
    assert len(lines) == 1
    assert lines[0].startswith(protocol.ERROR_PREFIX)
    assert "Никто" in lines[0]
    assert lines_for(room, outcome.deliveries, "b") == []


@pytest.mark.parametrize("command", ["/msg", "/msg ", "/msg Борис", "/msg Борис   "])
def test_private_message_missing_text(room, command):
    outcome = room.handle("a", command)
    lines = lines_for(room, outcome.deliveries, "a")
    assert len(lines) == 1 and lines[0].startswith(protocol.ERROR_PREFIX)
    assert "/msg ИМЯ ТЕКСТ" in lines[0]
    assert lines_for(room, outcome.deliveries, "b") == []


def test_private_message_to_self_refused(room):
    outcome = room.handle("a", "/msg анна привет")
    lines = lines_for(room, outcome.deliveries, "a")
    assert len(lines) == 1 and lines[0].startswith(protocol.ERROR_PREFIX)
    assert lines_for(room, outcome.deliveries, "b") == []


def test_quit(room):
    outcome = room.handle("a", "/quit")
    assert outcome.close is True
    # The goodbye is addressed to the leaving key, although it is no member now.
    (goodbye,) = lines_for(room, outcome.deliveries, "a")
    assert goodbye.startswith(protocol.NOTICE_PREFIX) and "Анна" in goodbye
    (notice,) = lines_for(room, outcome.deliveries, "b")
    assert notice.startswith(protocol.NOTICE_PREFIX) and "Анна" in notice
    assert notice != goodbye
    assert "a" not in room
    assert room.names() == ["Борис"]
    assert room.leave("a") == []  # the transport's later cleanup adds nothing


def test_quit_frees_the_name(room):
    room.handle("a", "/quit")
    room.join("c", "анна")
    assert room.names() == ["Борис", "анна"]


def test_leave_notice_once(room):
    room.join("c", "Вера")
    first = room.leave("a")
    (notice,) = lines_for(room, first, "b")
    assert notice.startswith(protocol.NOTICE_PREFIX) and "Анна" in notice
    assert lines_for(room, first, "c") == [notice]
    assert room.leave("a") == []
    assert room.leave("never-joined") == []


def test_leave_with_reason(room):
    deliveries = room.leave("a", protocol.SLOW_READER_REASON)
    (notice,) = lines_for(room, deliveries, "b")
    assert notice.startswith(protocol.NOTICE_PREFIX)
    assert "Анна" in notice and protocol.SLOW_READER_REASON in notice


@pytest.mark.parametrize("command", ["/dance", "/DANCE with me", "/"])
def test_unknown_command_hints_help(room, command):
    outcome = room.handle("a", command)
    lines = lines_for(room, outcome.deliveries, "a")
    assert len(lines) == 1
    assert lines[0].startswith(protocol.ERROR_PREFIX)
    assert "/help" in lines[0]
    assert lines_for(room, outcome.deliveries, "b") == []
    assert not outcome.close


def test_recipients_of_addressed_delivery_need_not_be_members():
    room = ChatRoom()
    delivery = protocol.Delivery("!!! x", to=("stranger",))
    assert list(room.recipients(delivery)) == ["stranger"]


# --- ChatRoom.receive: bytes in, deliveries out (h11 style) ----------------------------
# The transports only move bytes: a TCP server feeds what recv() returned
# through the connection's LineFramer and every event into receive(); a UDP
# server gives receive() each datagram.  These tests do exactly that with no
# socket, so every way a network may cut or glue the bytes can be tried.
class Wire:
    """A transport without sockets around one :class:`ChatRoom`.

    :meth:`stream` is what a TCP server does with one ``recv()`` chunk,
    :meth:`datagram` what a UDP server does with one datagram.  The lines
    each key gets are recorded in :attr:`got`, recipients resolved at once
    (as the servers do, under their lock); a key whose outcome said
    ``close`` is in :attr:`closed` and its later bytes are not read.
    """

    def __init__(self, room):
        self.room = room
        self.framers = {}
        self.got = {}
        self.closed = set()
        self.outcomes = []

    def lines(self, key):
        return self.got.get(key, [])

    def stream(self, key, chunk):
        """Feed one chunk of key's TCP stream; return the outcomes it caused."""
        framer = self.framers.setdefault(key, LineFramer(self.room.max_message_bytes))
        outcomes = []
        for event in framer.feed(chunk):
            if key in self.closed:
                break
            outcomes.append(self._apply(key, event))
        return outcomes

    def stream_all(self, key, chunks):
        outcomes = []
        for chunk in chunks:
            outcomes += self.stream(key, chunk)
        return outcomes

    def datagram(self, key, data):
        """Apply one UDP datagram of key; return its outcome."""
        return self._apply(key, data)

    def _apply(self, key, data):
        outcome = self.room.receive(key, data)
        for delivery in outcome.deliveries:
            for recipient in self.room.recipients(delivery):
                self.got.setdefault(recipient, []).append(delivery.line)
        if outcome.close:
            self.closed.add(key)
        self.outcomes.append(outcome)
        return outcome


def tcp_wire(*names):
    """A TCP-mode room whose members joined in order, keys "m0", "m1"...,
    with nothing recorded yet."""
    wire = Wire(ChatRoom())
    for i, name in enumerate(names):
        wire.stream(f"m{i}", protocol.encode_line(name))
    wire.got.clear()
    wire.outcomes.clear()
    return wire


def udp_wire(*names):
    """The UDP-mode twin of :func:`tcp_wire`."""
    wire = Wire(ChatRoom(join_command=True))
    for i, name in enumerate(names):
        wire.datagram(f"m{i}", f"/join {name}".encode())
    wire.got.clear()
    wire.outcomes.clear()
    return wire


def chunks_of(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def is_error(line, *words):
    return line.startswith(protocol.ERROR_PREFIX) and all(word in line for word in words)


def is_notice(line, *words):
    return line.startswith(protocol.NOTICE_PREFIX) and all(word in line for word in words)


# A newcomer's whole TCP session: name, a message, every command, a ping
# (answered with a pong), a line of blanks, a repeated join with her own name
# (welcomed again), a join with another name (an error), and goodbye.  Then a
# line after /quit, which the server never reads.
SESSION = (
    "Анна\r\n"
    "Привет, Борис!\n"
    "/users\n"
    "/msg борис лично\n"
    "/ping\n"
    " \t \n"
    "/join Анна\n"
    "/join Вера\n"
    "\n"
    "/help\n"
    "/quit\n"
    "после выхода\n"
).encode()


def check_session(wire):
    """What SESSION must cause, however its bytes were cut: "new" is Анна,
    "m0" is Борис, who was in the chat already."""
    anna, boris = wire.lines("new"), wire.lines("m0")
    assert len(anna) == 7, anna
    assert anna[0].startswith(f"{protocol.WELCOME_PREFIX}, Анна!") and "(2): Борис, Анна" in anna[0]
    assert is_notice(anna[1], "(2): Борис, Анна")  # /users
    assert anna[2] == protocol.PONG  # /ping, to her only
    assert anna[3] == anna[0]  # /join Анна: a retransmission, the welcome again
    assert is_error(anna[4], "Анна", "уже в чате")  # /join Вера of a member
    assert anna[5] == protocol.HELP_TEXT
    assert anna[6].startswith(protocol.GOODBYE_PREFIX) and "Анна" in anna[6]
    assert len(boris) == 4, boris
    assert is_notice(boris[0], "Анна") and not boris[0].startswith(protocol.WELCOME_PREFIX)
    assert boris[1] == "Анна: Привет, Борис!"
    assert boris[2] == "Анна (лично): лично"
    assert is_notice(boris[3], "Анна") and boris[3] != boris[0]
    assert wire.closed == {"new"}
    assert wire.room.names() == ["Борис"]


def test_receive_session_in_one_chunk():
    wire = tcp_wire("Борис")
    wire.stream("new", SESSION)
    check_session(wire)


def test_receive_session_byte_by_byte():
    wire = tcp_wire("Борис")
    for i in range(len(SESSION)):
        wire.stream("new", SESSION[i:i + 1])
    check_session(wire)


@pytest.mark.parametrize("size", [2, 3, 5, 7, 64])
def test_receive_session_in_chunks_of_any_size(size):
    wire = tcp_wire("Борис")
    wire.stream_all("new", chunks_of(SESSION, size))
    check_session(wire)


def test_receive_nothing_happens_before_the_line_is_complete():
    wire = tcp_wire("Анна", "Борис")
    data = "Жёлтый ёжик\n".encode()
    for piece in (data[:1], data[1:4], data[4:-1]):  # cut inside "Ж", inside "ё", before \n
        assert wire.stream("m0", piece) == []
    assert wire.got == {}
    (outcome,) = wire.stream("m0", data[-1:])
    assert outcome.text == "Жёлтый ёжик"
    assert wire.lines("m1") == ["Анна: Жёлтый ёжик"]


def test_receive_cut_in_the_middle_of_a_cyrillic_letter_of_the_name():
    wire = tcp_wire("Борис")
    data = "Ёжик\n".encode()
    assert wire.stream("new", data[:1]) == []  # half of "Ё"
    assert wire.stream("new", data[1:]) != []
    assert wire.room.names() == ["Борис", "Ёжик"]
    assert wire.lines("new")[0].startswith(f"{protocol.WELCOME_PREFIX}, Ёжик!")


def test_receive_several_messages_in_one_chunk_one_bad_among_them():
    wire = tcp_wire("Анна", "Борис")
    wire.stream("m0", "раз\nдва\n".encode() + b"\xff\n\x1b[31m\n" + "три\n/users\n".encode())
    assert wire.lines("m1") == ["Анна: раз", "Анна: два", "Анна: три"]
    anna = wire.lines("m0")
    assert len(anna) == 3, anna
    assert is_error(anna[0], "UTF-8")  # each bad line is refused alone...
    assert is_error(anna[1]) and anna[1] != anna[0]
    assert is_notice(anna[2], "(2): Анна, Борис")  # ...and its neighbours go on


def test_receive_every_cut_point_of_a_short_session():
    data = "Ёж\nэх, ты\n/ping\n/quit\n".encode()
    whole = tcp_wire("Борис")
    whole.stream("new", data)
    assert len(whole.lines("new")) == 3 and len(whole.lines("m0")) == 3  # /ping: a pong to Ёж
    assert whole.lines("new")[1] == protocol.PONG
    assert whole.lines("m0")[1] == "Ёж: эх, ты"
    for cut in range(1, len(data)):
        wire = tcp_wire("Борис")
        wire.stream_all("new", [data[:cut], data[cut:]])
        assert wire.got == whole.got, cut
        assert wire.closed == {"new"}, cut


# --- Newcomers -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, reason",
    [("два слова", "' '"), ("", "пуст"), ("   ", "' '"), ("борис", "занято")],
    ids=["space", "empty", "blanks", "taken"],
)
def test_receive_tcp_refused_name_gets_error_then_prompt(name, reason):
    wire = tcp_wire("Борис")
    (outcome,) = wire.stream("new", protocol.encode_line(name))
    assert outcome.joined is None and not outcome.close
    assert wire.lines("new") == [wire.lines("new")[0], protocol.NAME_PROMPT]
    assert is_error(wire.lines("new")[0], reason)
    assert "new" not in wire.room and wire.lines("m0") == []
    # Still at the prompt: the next line is the next try.
    (outcome,) = wire.stream("new", "Вера\n".encode())
    assert outcome.joined == "Вера"
    assert wire.room.names() == ["Борис", "Вера"]


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\n", "esc\x1b[1m\n".encode(), "c1\u009b\n".encode(), b"nul\x00\n",
     b"z" * (config.MAX_MESSAGE_BYTES + 1) + b"\n"],
    ids=["invalid-utf8", "escape", "c1", "nul", "too-long"],
)
def test_receive_tcp_unreadable_name_gets_error_then_prompt(data):
    wire = tcp_wire("Борис")
    (outcome,) = wire.stream("new", data)
    assert outcome.text is None and outcome.joined is None and not outcome.close
    (error, prompt) = wire.lines("new")
    assert is_error(error) and prompt == protocol.NAME_PROMPT
    assert "new" not in wire.room and wire.lines("m0") == []


def test_receive_tcp_line_too_long_event_from_newcomer():
    room = ChatRoom(max_message_bytes=10)
    outcome = room.receive("new", LINE_TOO_LONG)
    assert [d.line for d in outcome.deliveries] == [
        protocol.error_line(protocol.too_long_text(10)), protocol.NAME_PROMPT]
    assert all(d.to == ("new",) for d in outcome.deliveries)
    assert outcome.text is None and outcome.joined is None


@pytest.mark.parametrize("command", ["/quit", "/QUIT", " /quit  ", "/quit\r"])
def test_receive_tcp_quit_at_the_prompt_says_goodbye_and_closes(command):
    wire = tcp_wire("Борис")
    (outcome,) = wire.stream("new", protocol.encode_line(command))
    assert outcome.close is True and outcome.joined is None
    assert wire.lines("new") == [protocol.GOODBYE_PREFIX + "!"]
    assert wire.lines("m0") == [] and len(wire.room) == 1


@pytest.mark.parametrize("command", ["/users", "/help", "/join Вера", "/ping"])
def test_receive_tcp_a_command_at_the_prompt_is_a_refused_name(command):
    wire = tcp_wire("Борис")
    wire.stream("new", protocol.encode_line(command))
    (error, prompt) = wire.lines("new")
    assert is_error(error, "'/'") and prompt == protocol.NAME_PROMPT
    assert len(wire.room) == 1


def test_receive_udp_join_welcomes_and_notifies():
    wire = udp_wire("Борис")
    outcome = wire.datagram("new", "/join Вера".encode())
    assert outcome.joined == "Вера" and outcome.text == "/join Вера" and not outcome.close
    (welcome,) = wire.lines("new")
    assert welcome.startswith(f"{protocol.WELCOME_PREFIX}, Вера!") and "(2): Борис, Вера" in welcome
    (notice,) = wire.lines("m0")
    assert is_notice(notice, "Вера")


@pytest.mark.parametrize("datagram", ["/JOIN Вера", "/join   Вера  ", "/join Вера\r\n"])
def test_receive_udp_join_spelling(datagram):
    wire = udp_wire("Борис")
    assert wire.datagram("new", datagram.encode()).joined == "Вера"


@pytest.mark.parametrize(
    "datagram",
    ["привет", "Вера", "/users", "/help", "/msg Борис тайна", "/quit", "/ping", "/unknown",
     "", "\n", "   ", "\t", "/joinВера"],
)
def test_receive_udp_anything_but_join_gets_exactly_join_first(datagram):
    wire = udp_wire("Борис")
    outcome = wire.datagram("new", datagram.encode())
    assert wire.lines("new") == [protocol.JOIN_FIRST]
    assert not outcome.close and outcome.joined is None
    assert "new" not in wire.room and wire.lines("m0") == []


@pytest.mark.parametrize(
    "datagram, reason",
    [("/join", "пуст"), ("/join ", "пуст"), ("/join Вера Павловна", "' '"),
     ("/join борис", "занято")],
)
def test_receive_udp_refused_name_gets_one_error_without_prompt(datagram, reason):
    wire = udp_wire("Борис")
    outcome = wire.datagram("new", datagram.encode())
    (error,) = wire.lines("new")
    assert is_error(error, reason)
    assert outcome.joined is None and not outcome.close
    assert "new" not in wire.room and wire.lines("m0") == []


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", "/join esc\x1b[1m".encode(), "/join c1\u009b".encode(),
     b"/join " + b"z" * config.MAX_MESSAGE_BYTES, LINE_TOO_LONG],
    ids=["invalid-utf8", "escape", "c1", "too-long", "line-too-long-event"],
)
def test_receive_udp_unreadable_datagram_from_newcomer_gets_one_error(data):
    wire = udp_wire("Борис")
    outcome = wire.datagram("new", data)
    (error,) = wire.lines("new")
    assert is_error(error) and error != protocol.JOIN_FIRST
    assert outcome.text is None and outcome.joined is None
    assert "new" not in wire.room and wire.lines("m0") == []


# --- Members: bad input, Outcome fields ---------------------------------------------------
BAD_MEMBER_INPUT = {
    "invalid-utf8": b"\xff\xfe bad",
    "cut-letter": "Привет".encode()[:-1],
    "escape": "красный \x1b[31mтекст".encode(),
    "c1": "csi \u009b2J".encode(),
    "del": b"del \x7f",
    "too-long": b"w" * (config.MAX_MESSAGE_BYTES + 1),
}


@pytest.mark.parametrize("mode", ["tcp", "udp"])
@pytest.mark.parametrize("data", list(BAD_MEMBER_INPUT.values()), ids=list(BAD_MEMBER_INPUT))
def test_receive_bad_input_from_member_one_error_nothing_broadcast(mode, data):
    if mode == "tcp":
        wire = tcp_wire("Анна", "Борис")
        (outcome,) = wire.stream("m0", data + b"\n")
    else:
        wire = udp_wire("Анна", "Борис")
        outcome = wire.datagram("m0", data)
    (error,) = wire.lines("m0")  # one error, no prompt: a member is past the prompt
    assert is_error(error)
    assert outcome.text is None and outcome.joined is None and not outcome.close
    assert wire.lines("m1") == []
    assert wire.room.names() == ["Анна", "Борис"]


def test_receive_line_too_long_event_from_member():
    room = ChatRoom(max_message_bytes=10)
    room.join("a", "Анна")
    room.join("b", "Борис")
    outcome = room.receive("a", LINE_TOO_LONG)
    assert outcome.deliveries == [
        protocol.Delivery(protocol.error_line(protocol.too_long_text(10)), to=("a",))]
    assert outcome.text is None and not outcome.close


def test_receive_uses_the_room_limit_in_bytes():
    room = ChatRoom(max_message_bytes=10)
    room.join("a", "Анна")
    room.join("b", "Борис")
    assert lines_for(room, room.receive("a", ("я" * 5).encode()).deliveries, "b") == [
        "Анна: " + "я" * 5]
    (error,) = lines_for(room, room.receive("a", ("я" * 6).encode()).deliveries, "a")
    assert error == protocol.error_line(protocol.too_long_text(10))


def test_receive_outcome_joined_only_for_the_joining_message():
    wire = tcp_wire()
    first, second, third = wire.stream("k", "bad name\nАнна\nпривет\n".encode())
    assert (first.joined, second.joined, third.joined) == (None, "Анна", None)
    udp = udp_wire()
    assert udp.datagram("k", b"hello").joined is None
    assert udp.datagram("k", "/join Анна".encode()).joined == "Анна"
    assert udp.datagram("k", "/join Анна".encode()).joined is None  # a retransmission
    assert udp.datagram("k", "/join Вера".encode()).joined is None  # refused: already in


def test_receive_outcome_joined_is_the_normalized_name():
    room = ChatRoom()
    assert room.receive("k", "\u0418\u0306о".encode()).joined == "\u0419о"  # NFC


def test_receive_outcome_text_is_the_decoded_message():
    wire = tcp_wire("Анна", "Борис")
    (outcome,) = wire.stream("m0", "nc строка\r\n".encode())
    assert outcome.text == "nc строка"
    (outcome,) = wire.stream("m0", b"\xff\n")
    assert outcome.text is None
    udp = udp_wire("Анна")
    assert udp.datagram("m0", "/users\n".encode()).text == "/users"
    assert udp.datagram("m0", b"\x07").text is None


# --- New rules: blanks, /ping, /join of a member (both variants) -------------------------
BLANKS = [" ", "   ", "\t", " \t \t", "\t\t  \t"]


@pytest.mark.parametrize("text", BLANKS)
def test_handle_blank_text_ignored(room, text):
    outcome = room.handle("a", text)
    assert outcome.deliveries == [] and not outcome.close


@pytest.mark.parametrize("mode", ["tcp", "udp"])
@pytest.mark.parametrize("text", BLANKS + [" \t\r\n"])
def test_receive_blank_message_ignored(mode, text):
    wire = tcp_wire("Анна", "Борис") if mode == "tcp" else udp_wire("Анна", "Борис")
    data = text.encode()
    if mode == "tcp":
        (outcome,) = wire.stream("m0", data if data.endswith(b"\n") else data + b"\n")
    else:
        outcome = wire.datagram("m0", data)
    assert outcome.deliveries == [] and not outcome.close
    assert wire.got == {}


def test_text_with_blanks_around_is_still_broadcast_as_typed(room):
    outcome = room.handle("a", "  привет\t")
    assert lines_for(room, outcome.deliveries, "b") == ["Анна:   привет\t"]


PINGS = [("/ping", protocol.PONG), ("/PING", protocol.PONG), ("/Ping", protocol.PONG),
         ("/ping 123", "*** pong 123"), ("/ping 17 123456", "*** pong 17 123456"),
         ("/ping   ", protocol.PONG), ("/ping любой текст", "*** pong любой текст")]


@pytest.mark.parametrize("mode", ["tcp", "udp"])
@pytest.mark.parametrize("command, pong", PINGS, ids=[command for command, _ in PINGS])
def test_receive_ping_from_member_gets_one_pong_to_the_sender_only(mode, command, pong):
    wire = tcp_wire("Анна", "Борис") if mode == "tcp" else udp_wire("Анна", "Борис")
    if mode == "tcp":
        (outcome,) = wire.stream("m0", protocol.encode_line(command))
    else:
        outcome = wire.datagram("m0", command.encode())
    assert outcome.deliveries == [protocol.Delivery(pong, to=("m0",))]
    assert not outcome.close and outcome.joined is None
    assert outcome.text == command
    assert wire.got == {"m0": [pong]}  # never broadcast
    assert wire.room.names() == ["Анна", "Борис"]


def test_handle_ping_answers_pong_to_the_sender(room):
    outcome = room.handle("a", protocol.PING_COMMAND)
    assert outcome.deliveries == [protocol.Delivery(protocol.PONG, to=("a",))]
    assert not outcome.close
    assert room.handle("a", "/ping 1 2").deliveries == [protocol.Delivery("*** pong 1 2", to=("a",))]


@pytest.mark.parametrize("mode", ["tcp", "udp"])
@pytest.mark.parametrize("command", ["/join Вера", "/join", "/join ", "/join Анна Вера"])
def test_receive_join_with_another_name_from_member_is_an_error(mode, command):
    wire = tcp_wire("Анна", "Борис") if mode == "tcp" else udp_wire("Анна", "Борис")
    if mode == "tcp":
        (outcome,) = wire.stream("m0", protocol.encode_line(command))
    else:
        outcome = wire.datagram("m0", command.encode())
    assert wire.lines("m0") == [protocol.error_line("Вы уже в чате под именем Анна")]
    assert outcome.joined is None and not outcome.close
    assert wire.lines("m1") == []
    assert wire.room.names() == ["Анна", "Борис"]  # no second name, no rename


@pytest.mark.parametrize("mode", ["tcp", "udp"])
@pytest.mark.parametrize("command", ["/join Анна", "/JOIN анна", "/join   АННА  ",
                                     "/join \uff21\uff4e\uff4e\uff41"])  # fullwidth: NFKC
def test_receive_join_with_own_name_from_member_is_welcomed_again(mode, command):
    name = "Анна" if "\uff21" not in command else "Anna"
    wire = tcp_wire(name, "Борис") if mode == "tcp" else udp_wire(name, "Борис")
    if mode == "tcp":
        (outcome,) = wire.stream("m0", protocol.encode_line(command))
    else:
        outcome = wire.datagram("m0", command.encode())
    (welcome,) = wire.lines("m0")
    assert welcome == f"{protocol.WELCOME_PREFIX}, {name}! Сейчас в чате (2): {name}, Борис. " \
                      "Список команд: /help"
    assert outcome.deliveries == [protocol.Delivery(welcome, to=("m0",))]
    assert outcome.joined is None and not outcome.close  # not a second join
    assert wire.lines("m1") == []  # nobody else hears anything
    assert wire.room.names() == [name, "Борис"]


# --- Line formats -----------------------------------------------------------------------
def test_line_formats():
    assert protocol.public_line("Анна", "привет") == "Анна: привет"
    assert protocol.private_line("Анна", "привет") == "Анна (лично): привет"
    assert protocol.notice_line("x") == "*** x"
    assert protocol.error_line("x") == "!!! x"
    assert protocol.encode_line("ё") == "ё\n".encode("utf-8")
    assert protocol.NAME_PROMPT.startswith(protocol.NOTICE_PREFIX)
    assert protocol.SHUTDOWN_NOTICE.startswith(protocol.NOTICE_PREFIX)
