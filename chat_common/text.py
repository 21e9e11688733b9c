"""What text the chat accepts and how it writes numbers: pure functions, no I/O.

:func:`decode_message` turns the bytes of a message into text or refuses it,
:func:`validate_name` holds the name rules, and :func:`plural` and
:func:`listing` write counts and lists in Russian.  ``chat_common.protocol``
applies them; they live apart because Unicode has more to say about what
can deceive a reader than the chat has rules.
"""

import re
import unicodedata

from chat_common import config


class ProtocolError(ValueError):
    """Input that breaks a chat rule; ``str(error)`` is the Russian reason."""


class NameRefused(ProtocolError):
    """A name that is invalid or already taken."""


class MessageRefused(ProtocolError):
    """A message that is too long, not UTF-8, or has control characters."""


# Refused in messages: C0 controls except tab, DEL and C1 controls (ESC starts
# terminal escape sequences); the bidirectional overrides and isolates of
# "Trojan Source" (CVE-2021-42574), which reorder how the rest of a line is
# shown; U+2028/U+2029, which break lines; and the noncharacters.
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF)
                                          for plane in range(17))
_CONTROL_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029"
                            + _NONCHARACTERS + "]")


def decode_message(raw, max_bytes=config.MAX_MESSAGE_BYTES):
    """Turn the bytes of one message (a line or a datagram) into ``str``.
    One line ending (``\\n``, ``\\r\\n`` or ``\\r``, as ``nc`` sends) is
    dropped.  ``max_bytes``: longest message in bytes without the ending.
    Raises :class:`MessageRefused` when the message is longer, is not valid
    UTF-8, or has a control character other than tab (see above)."""
    raw = raw.removesuffix(b"\n").removesuffix(b"\r")
    if len(raw) > max_bytes:
        raise MessageRefused(too_long_text(max_bytes))
    try:
        text = raw.decode(config.ENCODING)
    except UnicodeDecodeError:
        raise MessageRefused("Сообщение не в кодировке UTF-8 — оно отброшено") from None
    if _CONTROL_CHARS.search(text):
        raise MessageRefused("Управляющие символы в сообщении запрещены — оно отброшено")
    return text


def too_long_text(max_bytes=config.MAX_MESSAGE_BYTES):
    """The Russian error text for a message longer than ``max_bytes`` bytes."""
    return f"Сообщение длиннее {max_bytes} байт — оно отброшено"


# Hangul fillers are letters (Lo) that draw nothing; NFKC turns U+3164 and
# U+FFA0 into U+1160, so they are looked for before and after it.
_INVISIBLE_LETTERS = "\u115f\u1160\u3164\uffa0"
# Alphabets with letters that look alike (Latin "A", Cyrillic "А", Greek "Α"):
# a name may use one of them, not several (the idea of Unicode TR39).
_LOOKALIKE_SCRIPTS = {"LATIN", "CYRILLIC", "GREEK"}


def validate_name(name):
    """Check a user name (``str``) and return it in Unicode normal form NFKC.

    A valid name has 1 to ``config.MAX_NAME_CHARS`` characters: letters of
    any alphabet (a vowel sign or accent may follow a letter), decimal digits,
    ``_`` and ``-``; so no space or ``:`` and lines stay unambiguous.  NFKC
    folds look-alike forms (fullwidth ``Ａ``, mathematical ``𝐀``) into
    ordinary letters.  Invisible characters (format characters, Hangul
    fillers) and names mixing Latin, Cyrillic and Greek are refused.
    Raises :class:`NameRefused` with the reason.
    """
    normal = unicodedata.normalize("NFKC", name)
    for char in name + normal:
        if unicodedata.category(char) == "Cf" or char in _INVISIBLE_LETTERS:
            raise NameRefused(f"Невидимый символ U+{ord(char):04X} в имени запрещён")
    if not normal:
        raise NameRefused("Имя не может быть пустым")
    if len(normal) > config.MAX_NAME_CHARS:
        raise NameRefused(f"Имя длиннее {config.MAX_NAME_CHARS} символов")
    for before, char in zip(" " + normal, normal):
        # A vowel sign or an accent (a combining mark) may follow a letter or a mark.
        mark = _is_mark(char) and (before.isalpha() or _is_mark(before))
        if not (mark or char.isalpha() or char.isdecimal() or char in "_-"):
            raise NameRefused(
                f"Недопустимый символ {char!r} в имени: можно только буквы, цифры, «_» и «-»")
    scripts = {unicodedata.name(char, "").split(" ")[0] for char in normal} & _LOOKALIKE_SCRIPTS
    if len(scripts) > 1:
        raise NameRefused("Имя смешивает латиницу, кириллицу и греческие буквы: "
                          "напишите его буквами одного алфавита")
    return normal


def _is_mark(char):
    return unicodedata.category(char) in ("Mn", "Mc")


def name_key(name):
    """The form in which two names are compared (``str``): NFKC, case folded."""
    return unicodedata.normalize("NFKC", name).casefold()


def number(n, digits=0):
    """``n`` (int or float) in Russian style, rounded to ``digits`` decimal places:
    thousands apart, a decimal comma: ``5 257 152``, ``number(0.456, 2)`` is ``0,46``."""
    return f"{n:,.{digits}f}".replace(",", " ").replace(".", ",")


def plural(n, one, few, many):
    """``n`` with the noun form agreeing with it: ``plural(2, "строка", "строки",
    "строк")`` is ``"2 строки"``; ``one`` for 1, 21, 101…, ``few`` for 2–4,
    22–24…, ``many`` for the rest (5–20, 25…)."""
    if n % 10 == 1 and n % 100 != 11:
        return f"{number(n)} {one}"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return f"{number(n)} {few}"
    return f"{number(n)} {many}"


def listing(names, max_bytes):
    """``names`` joined by ``", "``, cut to at most ``max_bytes`` bytes of
    UTF-8 with ``… и ещё N`` (N always right) where they do not all fit."""
    text = ", ".join(names)
    if len(text.encode(config.ENCODING)) <= max_bytes:
        return text
    shown, size = [], 0
    for index, name in enumerate(names):
        size += len(name.encode(config.ENCODING)) + 2  # the name and ", "
        if size + len(f"… и ещё {number(len(names))}".encode(config.ENCODING)) > max_bytes:
            return ", ".join(shown) + f"… и ещё {number(len(names) - index)}"
        shown.append(name)
    return text
