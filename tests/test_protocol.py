"""Unit tests of chat_common.protocol: the chat rules with no sockets at all."""

import unicodedata

import pytest

from chat_common import config
from chat_common import protocol
from chat_common.protocol import (
    LINE_TOO_LONG,
    ChatRoom,
    LineFramer,
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


def _one_by_one(events):
    """What decode_lines must return: decode_message applied to each line."""
    result = []
    for event in events:
        try:
            result.append(decode_message(event))
        except MessageRefused as error:
            result.append(str(error))
    return result


def _as_comparable(items):
    return [str(item) for item in items]


@pytest.mark.parametrize(
    "bad",
    ["\x1b[31mred", "nul\x00", "del\x7f", "csi\x9b2J", "c1 \x80", "c1 \x9f", "vt\x0b"],
)
def test_decode_lines_refuses_control_line_inside_a_batch(bad):
    # The batch is checked at once; a bad line among good ones must still be
    # refused alone, and its neighbours decoded.
    events = ["Привет «всем»".encode(), bad.encode(), "tab\tok\u00a0nbsp".encode()]
    items = protocol.decode_lines(events)
    assert isinstance(items[1], MessageRefused)
    assert items[0] == "Привет «всем»" and items[2] == "tab\tok\u00a0nbsp"


def test_decode_lines_batch_agrees_with_decode_message_for_every_code_point():
    # Every character from U+0000 to U+07FF (all one- and two-byte UTF-8:
    # C0, DEL, C1 and the Latin-1 and Cyrillic letters around them) between
    # good lines.  \n never occurs inside a framed line; \r is tried too.
    for code in range(0x800):
        if code == 0x0A:
            continue
        events = [b"ok", f"a{chr(code)}b".encode(), "ок".encode()]
        assert _as_comparable(protocol.decode_lines(events)) == _one_by_one(events), hex(code)


def test_decode_lines_batch_of_clean_lines_is_split_back():
    events = [b"one", "два".encode(), b"", "«три»".encode()]
    assert protocol.decode_lines(events) == ["one", "два", "", "«три»"]


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


# --- Line formats -----------------------------------------------------------------------
def test_line_formats():
    assert protocol.public_line("Анна", "привет") == "Анна: привет"
    assert protocol.private_line("Анна", "привет") == "Анна (лично): привет"
    assert protocol.notice_line("x") == "*** x"
    assert protocol.error_line("x") == "!!! x"
    assert protocol.encode_line("ё") == "ё\n".encode("utf-8")
    assert protocol.NAME_PROMPT.startswith(protocol.NOTICE_PREFIX)
    assert protocol.SHUTDOWN_NOTICE.startswith(protocol.NOTICE_PREFIX)
