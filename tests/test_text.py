"""What text the chat accepts, and how it writes numbers and lists (issue 11).

Pure tests, no sockets: ``decode_message`` refuses the characters that
reorder or break how a line is shown, ``validate_name`` refuses invisible and
look-alike names but accepts real names in any script, and ``plural``,
``number`` and ``listing`` write counts and lists in Russian.  Everything is
reached through ``chat_common.protocol``, which the transports use.
"""

import re
import sys
import unicodedata

import pytest

from chat_common import config
from chat_common import protocol
from chat_common.framing import LineFramer
from chat_common.protocol import ChatRoom, MessageRefused, NameRefused

HANGUL_FILLERS = ["\u115f", "\u1160", "\u3164", "\uffa0"]
"""Letters (category Lo) that draw nothing."""


def hex_id(char):
    return f"U+{ord(char):04X}"


# --- Messages ----------------------------------------------------------------------
REFUSED_IN_MESSAGES = (
    [chr(code) for code in range(0x202A, 0x202F)]  # LRE RLE PDF LRO RLO ("Trojan Source")
    + [chr(code) for code in range(0x2066, 0x206A)]  # LRI RLI FSI PDI
    + ["\u2028", "\u2029"]  # line and paragraph separators
    + ["\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff"]  # noncharacters
)


@pytest.mark.parametrize("char", REFUSED_IN_MESSAGES, ids=hex_id)
def test_message_with_bidi_control_line_separator_or_noncharacter_is_refused(char):
    for text in (f"abc{char}def", char, f"if access {char}# admin"):
        with pytest.raises(MessageRefused) as info:
            protocol.decode_message(text.encode(config.ENCODING))
        assert re.search("[а-яё]", str(info.value)), info.value  # the reason, in Russian


@pytest.mark.parametrize("text", [
    "zero\u200bwidth space",  # allowed in messages, only names refuse it
    "soft\u00adhyphen",
    "семья 👨\u200d👩\u200d👧 и флаг 🇷🇺",  # emoji sequences are joined by U+200D
    "Привет, мир! Ёлка и ёжик",
    "שלום עולם",  # right-to-left text needs no control character
    "नमस्ते दुनिया",
    "ﷺ and \U0001F600",
])
def test_message_with_ordinary_text_and_zero_width_characters_is_accepted(text):
    assert protocol.decode_message(text.encode(config.ENCODING)) == text


def test_refused_message_gets_an_error_and_reaches_nobody():
    room = ChatRoom()
    room.join("a", "Анна")
    room.join("b", "Борис")
    outcome = room.receive("a", "abc\u202edcba\n".encode(config.ENCODING))
    assert [(d.line[:4], d.to) for d in outcome.deliveries] == [(protocol.ERROR_PREFIX, ("a",))]
    assert "\u202e" not in outcome.deliveries[0].line
    assert room.names() == ["Анна", "Борис"]


# --- Names: invisible characters ------------------------------------------------------
@pytest.mark.parametrize("char", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",
                                  "\u202e", "\u2066", "\u00ad", "\u061c", "\u200e"], ids=hex_id)
def test_name_with_a_format_character_is_refused_and_the_reason_names_it(char):
    for name in (char, f"Bob{char}", f"{char}Bob", f"Бо{char}б"):
        with pytest.raises(NameRefused) as info:
            protocol.validate_name(name)
        assert hex_id(char) in str(info.value), info.value


def test_name_with_any_format_character_is_refused():
    # Every character of category Cf: zero-width, bidi controls, soft hyphen...
    format_characters = [chr(code) for code in range(sys.maxunicode + 1)
                         if unicodedata.category(chr(code)) == "Cf"]
    assert len(format_characters) > 150
    for char in format_characters:
        with pytest.raises(NameRefused) as info:
            protocol.validate_name(f"Bob{char}")
        assert hex_id(char) in str(info.value), info.value


@pytest.mark.parametrize("char", HANGUL_FILLERS, ids=hex_id)
def test_name_with_a_hangul_filler_is_refused_alone_and_among_letters(char):
    # NFKC turns U+3164 and U+FFA0 into U+1160: refused before and after it.
    assert unicodedata.category(char) == "Lo" and char.isalpha()
    for name in (char, char * 3, f"Bob{char}", f"{char}Bob", f"한{char}글",
                 unicodedata.normalize("NFKC", char)):
        with pytest.raises(NameRefused) as info:
            protocol.validate_name(name)
        assert "U+" in str(info.value), info.value


def test_a_filler_name_cannot_join_beside_a_member():
    room = ChatRoom()
    room.join("a", "Анна")
    for key, filler in enumerate(HANGUL_FILLERS):
        with pytest.raises(NameRefused):
            room.join(key, filler)
    assert room.names() == ["Анна"]


# --- Names: look-alikes -----------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "\u0410lice",  # Cyrillic А + Latin
    "\u0391lice",  # Greek Α + Latin
    "Alic\u0435",  # Latin + Cyrillic е at the end
    "Ann\u0430_1",
    "\u0412\u0430\u0441\u044fa",  # Вася + Latin a
    "\u0395\u03bb\u03ad\u03bd\u03b7\u0436",  # Greek + Cyrillic ж
    "p\u0430ypal",
])
def test_name_mixing_latin_cyrillic_and_greek_is_refused(name):
    with pytest.raises(NameRefused) as info:
        protocol.validate_name(name)
    assert re.search("[а-яё]", str(info.value)), info.value


@pytest.mark.parametrize("name", ["Alice", "Алиса", "Ελένη", "Вася_2000", "user-1", "Ёжик"])
def test_name_in_one_alphabet_is_accepted(name):
    assert protocol.validate_name(name) == name


@pytest.mark.parametrize("name", [
    "\uff21\uff4c\uff49\uff43\uff45",  # fullwidth Ａｌｉｃｅ
    "\U0001d400\U0001d425\U0001d422\U0001d41c\U0001d41e",  # mathematical bold 𝐀𝐥𝐢𝐜𝐞
    "\U0001d4d0\U0001d4f5\U0001d4f2\U0001d4ec\U0001d4ee",  # mathematical bold script
])
def test_fullwidth_and_mathematical_letters_are_normalised(name):
    assert protocol.validate_name(name) == "Alice"


@pytest.mark.parametrize("name, reason", [
    ("\uff21\uff4c\uff49\uff43\uff45", "уже занято"),  # NFKC: "Alice" itself
    ("\U0001d400\U0001d425\U0001d422\U0001d41c\U0001d41e", "уже занято"),
    ("\u0410lice", "смешивает"),  # must be written all in Cyrillic
    ("\u0391lice", "смешивает"),
])
def test_look_alike_of_a_member_cannot_join(name, reason):
    room = ChatRoom()
    room.join("alice", "Alice")
    with pytest.raises(NameRefused, match=reason):
        room.join("impostor", name)
    assert room.names() == ["Alice"] and "impostor" not in room


def test_fullwidth_look_alike_through_receive_is_told_the_name_is_taken():
    room = ChatRoom()
    room.join("alice", "Alice")
    outcome = room.receive("impostor", "\uff21\uff4c\uff49\uff43\uff45\n".encode(config.ENCODING))
    error, prompt = [d.line for d in outcome.deliveries]
    assert error.startswith(protocol.ERROR_PREFIX) and "уже занято" in error, error
    assert prompt == protocol.NAME_PROMPT
    assert room.names() == ["Alice"]


@pytest.mark.parametrize("member, newcomer", [
    ("alice", "\U0001d400\U0001d40b\U0001d408\U0001d402\U0001d404"),  # bold 𝐀𝐋𝐈𝐂𝐄
    ("ALICE", "\uff41\uff4c\uff49\uff43\uff45"),  # fullwidth ａｌｉｃｅ
    ("helga", "\u210celga"),  # black-letter ℌ, a capital without a lower case
    ("Straße", "STRASSE"),
])
def test_names_are_unique_ignoring_case_after_nfkc(member, newcomer):
    room = ChatRoom()
    room.join("m", member)
    with pytest.raises(NameRefused, match="занято"):
        room.join("n", newcomer)
    assert room.names() == [member]


def test_private_message_to_a_fullwidth_spelling_reaches_the_member():
    room = ChatRoom()
    room.join("a", "Alice")
    room.join("b", "Борис")
    outcome = room.handle("b", "/msg \uff41\uff4c\uff49\uff43\uff45 привет")
    assert [(d.line, d.to) for d in outcome.deliveries] == [("Борис (лично): привет", ("a",))]


# --- Names: real names in every script ---------------------------------------------------
@pytest.mark.parametrize("name", [
    "अमित",  # Hindi: vowel sign I (Mc) after a letter
    "สมศักดิ์",  # Thai: two marks (Mn) in a row
    "தமிழ்",  # Tamil
    "محمد",
    "김민준",
    "q\u0301",  # an accent with no precomposed letter
    "Ё\u0308ж",
])
def test_names_with_vowel_signs_and_accents_after_letters_are_accepted(name):
    assert protocol.validate_name(name) == unicodedata.normalize("NFKC", name)


def test_hindi_and_thai_members_join_and_are_listed():
    room = ChatRoom()
    room.join("a", "अमित")
    room.join("b", "สมศักดิ์")
    assert room.names() == ["अमित", "สมศักดิ์"]
    (reply,) = room.handle("a", "/users").deliveries
    assert reply.line.endswith("(2): अमित, สมศักดิ์"), reply.line


@pytest.mark.parametrize("name", ["\u0301abc", "\u093fमत", "\u0e31ก", "_\u0301", "7\u0301",
                                  "a-\u0301", "\u20dd"])
def test_name_with_a_mark_not_after_a_letter_is_refused(name):
    with pytest.raises(NameRefused):
        protocol.validate_name(name)


def test_name_limit_counts_characters_after_nfkc():
    name = "अ" * config.MAX_NAME_CHARS
    assert protocol.validate_name(name) == name
    with pytest.raises(NameRefused, match=str(config.MAX_NAME_CHARS)):
        protocol.validate_name("\ufdfa" * 2)  # two characters, 36 after NFKC


# --- A TCP session fed byte by byte -------------------------------------------------------
def tcp_session(chunks, members=("Борис",)):
    """Feed ``chunks`` of newcomer "new"'s stream through a LineFramer into a
    TCP room where ``members`` joined; return (room, lines per key)."""
    room = ChatRoom()
    for i, name in enumerate(members):
        room.join(f"m{i}", name)
    framer = LineFramer(room.max_message_bytes)
    got = {}
    for chunk in chunks:
        for event in framer.feed(chunk):
            outcome = room.receive("new", event)
            for delivery in outcome.deliveries:
                for key in room.recipients(delivery):
                    got.setdefault(key, []).append(delivery.line)
    return room, got


@pytest.mark.parametrize("name, letter", [
    ("अमित", "म"),  # cut between म and its vowel sign ि
    ("สมศักดิ์", "ศ"),  # between ศ and ั
    ("e\u0301mile", "e"),  # decomposed é: NFKC composes it
])
def test_name_with_a_mark_arrives_byte_by_byte_cut_between_letter_and_mark(name, letter):
    mark = name.index(letter) + 1
    assert unicodedata.category(name[mark]) in ("Mn", "Mc")
    data = f"{name}\nпривет\n".encode(config.ENCODING)
    cut = name[:mark].encode(config.ENCODING)
    expected = unicodedata.normalize("NFKC", name)
    for chunks in ([data[:len(cut)], data[len(cut):]],
                   [data[i:i + 1] for i in range(len(data))]):
        room, got = tcp_session(chunks)
        assert room.names() == ["Борис", expected]
        assert got["new"][0].startswith(f"{protocol.WELCOME_PREFIX}, {expected}!"), got["new"]
        assert len(got["new"]) == 1, got["new"]
        assert got["m0"] == [protocol.notice_line(f"{expected} входит в чат"),
                             f"{expected}: привет"]


# --- Numbers and lists ---------------------------------------------------------------------
@pytest.mark.parametrize("n, expected", [
    (0, "0 подключений"), (1, "1 подключение"), (2, "2 подключения"), (4, "4 подключения"),
    (5, "5 подключений"), (11, "11 подключений"), (12, "12 подключений"),
    (14, "14 подключений"), (21, "21 подключение"), (22, "22 подключения"),
    (25, "25 подключений"), (101, "101 подключение"), (111, "111 подключений"),
    (112, "112 подключений"), (1000, "1 000 подключений"), (1001, "1 001 подключение"),
    (5257152, "5 257 152 подключения"),
])
def test_plural(n, expected):
    assert protocol.plural(n, "подключение", "подключения", "подключений") == expected


@pytest.mark.parametrize("n, expected", [
    (0, "0"), (7, "7"), (999, "999"), (1000, "1 000"), (65000, "65 000"),
    (100000, "100 000"), (5257152, "5 257 152"), (1000000000, "1 000 000 000"),
])
def test_number(n, expected):
    assert protocol.number(n) == expected


@pytest.mark.parametrize("n, digits, expected", [
    (0.456, 2, "0,46"), (0.4, 1, "0,4"), (1234567.891, 1, "1 234 567,9"), (9450074.6, 0, "9 450 075"),
    (62033.5, 0, "62 034"), (2.0, 2, "2,00"), (-1234.5, 1, "-1 234,5"), (1234.5, 3, "1 234,500"),
])
def test_number_with_decimals_has_a_comma_and_spaces(n, digits, expected):
    assert protocol.number(n, digits) == expected


def test_listing_that_fits_is_joined_whole():
    names = ["Анна", "Борис", "𐌰𐌱"]
    full = ", ".join(names)
    size = len(full.encode(config.ENCODING))
    assert protocol.listing(names, size) == full  # exactly the limit
    assert protocol.listing(names, 10 * size) == full
    assert protocol.listing([], 0) == ""


LISTING_TAIL = re.compile(r"(.*)… и ещё (\d+(?: \d{3})*)", re.S)


@pytest.mark.parametrize("names", [
    [f"user{i}" for i in range(30)],
    [f"Участник{i}" for i in range(30)],
    ["𐌰" * 32 + str(i) for i in range(12)],
    [f"u{i}" for i in range(1500)],  # a four-digit count after "ещё"
], ids=["ascii", "cyrillic", "four-byte", "many"])
def test_listing_that_does_not_fit_is_cut_with_the_right_count(names):
    full = ", ".join(names)
    full_size = len(full.encode(config.ENCODING))
    smallest = len(f"… и ещё {protocol.number(len(names))}".encode(config.ENCODING))
    for max_bytes in sorted({*range(smallest, min(full_size, 400)),
                             *range(max(smallest, full_size - 200), full_size)}):
        text = protocol.listing(names, max_bytes)
        assert len(text.encode(config.ENCODING)) <= max_bytes, (max_bytes, text)
        match = LISTING_TAIL.fullmatch(text)
        assert match, (max_bytes, text)
        shown = match[1].split(", ") if match[1] else []
        remaining = int(match[2].replace(" ", ""))
        assert shown == names[:len(shown)], (max_bytes, text)
        assert len(shown) + remaining == len(names), (max_bytes, text)
        assert remaining >= 1
