"""The chat rules, with no I/O at all (the "sans-I/O" pattern of h11).

Nothing here touches a socket, a thread or a clock.  The TCP and UDP servers
are thin transports around these pieces, so the two variants differ only in
how bytes travel:

* :class:`LineFramer` cuts a TCP byte stream into lines (UDP needs no framer:
  one datagram is one message);
* :func:`decode_message` turns the bytes of one message into text or refuses it;
* :func:`validate_name` holds the name rules;
* :class:`ChatRoom` keeps the members and answers every message with a list
  of :class:`Delivery` objects: which line goes to whom.  The transport only
  has to send them.

Server to client, every line is one of four forms (names never contain a space
or ``:``, so the forms never collide)::

    NAME: TEXT            a public message
    NAME (лично): TEXT    a private message
    *** TEXT              a server notice
    !!! TEXT              an error about the client's own last input
"""

import re
import unicodedata
from dataclasses import dataclass, field
from typing import NamedTuple

from chat_common import config

# --- Line formats ----------------------------------------------------------
NOTICE_PREFIX = "*** "
ERROR_PREFIX = "!!! "
PRIVATE_MARK = " (лично)"


def public_line(name, text):
    """Format a public message: ``NAME: TEXT``."""
    return f"{name}: {text}"


def private_line(name, text):
    """Format a private message: ``NAME (лично): TEXT``."""
    return f"{name}{PRIVATE_MARK}: {text}"


def notice_line(text):
    """Format a server notice: ``*** TEXT``."""
    return NOTICE_PREFIX + text


def error_line(text):
    """Format an error about the client's own input: ``!!! TEXT``."""
    return ERROR_PREFIX + text


def encode_line(line):
    """Encode one line for the wire: UTF-8 with a trailing ``\\n`` (bytes)."""
    return (line + "\n").encode(config.ENCODING)


# --- Fixed texts (Russian: users read them) ---------------------------------
NAME_PROMPT = notice_line("Введите имя (буквы, цифры, «_» или «-», до 32 символов):")
WELCOME_PREFIX = NOTICE_PREFIX + "Добро пожаловать"
SHUTDOWN_NOTICE = notice_line("Сервер останавливается. До свидания!")
HELP_TEXT = notice_line(
    "Команды: /users — кто в чате; /msg ИМЯ ТЕКСТ — личное сообщение; "
    "/quit — выйти; /help — эта справка. Любой другой текст получат все."
)
GOODBYE_PREFIX = NOTICE_PREFIX + "До свидания"
SLOW_READER_REASON = "не успевает получать сообщения"
SILENT_REASON = "нет связи (не приходят сигналы присутствия)"
JOIN_FIRST = error_line("Сначала войдите в чат: /join ИМЯ")
"""UDP only: the answer to anything from an address that has not joined."""
JOIN_COMMAND = "/join"
"""UDP only: ``/join NAME`` is the first datagram of a client."""
PING_COMMAND = "/ping"
"""UDP only: the heartbeat datagram; it only tells the server we are alive."""


def already_joined_text(name):
    """UDP only: the error text for ``/join`` from an address that is a member."""
    return f"Вы уже в чате под именем {name}"


class ProtocolError(ValueError):
    """Input that breaks a chat rule.

    ``str(error)`` is the Russian explanation for the user; the transport
    sends it back as an error line (:func:`error_line`).
    """


class NameRefused(ProtocolError):
    """A name that is invalid or already taken."""


class MessageRefused(ProtocolError):
    """A message that is too long, not UTF-8, or has control characters."""


# --- Framing (TCP only) ----------------------------------------------------
class LineTooLong:
    """Event of :class:`LineFramer`: a line longer than the limit was dropped."""

    def __repr__(self):
        return "LineTooLong()"


LINE_TOO_LONG = LineTooLong()


class LineFramer:
    """Cut a TCP byte stream into lines ending in ``\\n``.

    TCP delivers a stream, not messages: one ``recv()`` may return half a line,
    several lines, or a line cut inside a multibyte UTF-8 letter.  The framer
    keeps the unfinished tail between calls, so lines come out exactly as they
    were sent.  Splitting on the byte ``\\n`` is safe in UTF-8: that byte never
    occurs inside a multibyte character.

    A line longer than ``max_line_bytes`` (not counting ``\\n`` or ``\\r\\n``)
    yields one :data:`LINE_TOO_LONG` event and is discarded up to the next
    ``\\n``; the framer never keeps more than ``max_line_bytes + 1`` bytes
    (the ``+ 1`` is room for a ``\\r`` whose ``\\n`` has not arrived yet).
    """

    def __init__(self, max_line_bytes=config.MAX_MESSAGE_BYTES):
        """``max_line_bytes``: longest line in bytes, without its ending."""
        self.max_line_bytes = max_line_bytes
        self._tail = b""
        self._discarding = False  # inside a too-long line, waiting for its \n

    def feed(self, data):
        """Take the next bytes of the stream and return the finished events.

        ``data``: bytes exactly as ``recv()`` returned them.  Returns a list
        whose items are ``bytes`` (one complete line, without ``\\n`` but
        possibly ending in ``\\r``, not yet decoded) or :data:`LINE_TOO_LONG`.
        """
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._discarding = False
            data = data[newline + 1:]
        else:
            data = self._tail + data
        lines = data.split(b"\n")  # one C call, however many lines arrived
        self._tail = lines.pop()  # the unfinished rest (b"" after a final \n)
        if lines and max(map(len, lines)) > self.max_line_bytes:
            lines = [self._check_length(line) for line in lines]
        if len(self._tail) > self.max_line_bytes + 1:
            lines.append(LINE_TOO_LONG)
            self._tail = b""
            self._discarding = True
        return lines

    def _check_length(self, line):
        ending = 1 if line.endswith(b"\r") else 0  # \r\n counts as the ending
        return LINE_TOO_LONG if len(line) - ending > self.max_line_bytes else line

    @property
    def buffered(self):
        """Bytes kept from an unfinished line (int)."""
        return len(self._tail)


# --- Messages --------------------------------------------------------------
# C0 controls except tab, DEL and C1 controls: ESC among them starts terminal
# escape sequences, which must never reach another user's screen.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def decode_message(raw, max_bytes=config.MAX_MESSAGE_BYTES):
    """Turn the bytes of one message into text, or refuse it.

    ``raw``: one line (TCP) or one datagram (UDP), bytes.  One line ending
    (``\\n``, ``\\r\\n`` or ``\\r``) is dropped, which is what ``nc`` and
    ``telnet`` send.  ``max_bytes``: longest message in bytes without the
    ending.  Returns ``str``.

    Raises :class:`MessageRefused` when the message is longer than
    ``max_bytes``, is not valid UTF-8, or contains a control character other
    than tab (C0, DEL, C1).
    """
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > max_bytes:
        raise MessageRefused(too_long_text(max_bytes))
    try:
        text = raw.decode(config.ENCODING)
    except UnicodeDecodeError:
        raise MessageRefused("Сообщение не в кодировке UTF-8 — оно отброшено") from None
    if _CONTROL_CHARS.search(text):
        raise MessageRefused("Управляющие символы в сообщении запрещены — оно отброшено")
    return text


# The same set as bytes of valid UTF-8, to check many lines joined by \n at
# once: C0 controls and DEL are single bytes below 0x80 (never part of a
# multibyte letter), and a C1 control U+0080..U+009F is always the pair
# \xc2 + \x80..\x9f (\xc2 is only ever a lead byte).  Deleting bytes with
# translate() and searching for a literal are C loops, several times faster
# than a regular expression over the decoded text.
_C0_AND_DEL_BUT_NEWLINE = bytes(range(0x00, 0x09)) + bytes(range(0x0b, 0x20)) + b"\x7f"
_C1_CONTROL_BYTES = re.compile(b"\xc2[\x80-\x9f]")


def _has_control_bytes(data):
    """Whether valid UTF-8 ``data`` holds a control character other than tab or ``\n``."""
    if len(data.translate(None, _C0_AND_DEL_BUT_NEWLINE)) != len(data):
        return True
    return b"\xc2" in data and _C1_CONTROL_BYTES.search(data) is not None


def decode_lines(events, max_bytes=config.MAX_MESSAGE_BYTES):
    """Decode the events of :meth:`LineFramer.feed`, in order.

    Returns a list with one item per event: the ``str`` of a valid line, or
    the :class:`MessageRefused` error for a refused one (:data:`LINE_TOO_LONG`
    included), with the same rules as :func:`decode_message`.

    When every line is fine, which is nearly always, the whole batch costs
    one ``decode()`` and one scan of the bytes for control characters
    instead of one each per line: that matters to a server receiving
    thousands of lines a second.
    """
    if not events:
        return []
    if LINE_TOO_LONG not in events:
        joined = b"\n".join(events)
        if b"\r" not in joined and max(map(len, events), default=0) <= max_bytes:
            try:
                text = joined.decode(config.ENCODING)
            except UnicodeDecodeError:
                text = None
            if text is not None and not _has_control_bytes(joined):
                return text.split("\n")
    return [_decode_or_error(event, max_bytes) for event in events]


def _decode_or_error(event, max_bytes):
    if event is LINE_TOO_LONG:
        return MessageRefused(too_long_text(max_bytes))
    try:
        return decode_message(event, max_bytes)
    except MessageRefused as error:
        return error


def too_long_text(max_bytes=config.MAX_MESSAGE_BYTES):
    """The Russian error text for a message longer than ``max_bytes`` bytes."""
    return f"Сообщение длиннее {max_bytes} байт — оно отброшено"


def validate_name(name):
    """Check a user name and return it in Unicode normal form NFC.

    ``name``: the name exactly as typed, ``str``.  A valid name has 1 to
    ``config.MAX_NAME_CHARS`` characters, each a letter of any alphabet, a
    decimal digit, ``_`` or ``-``; so it never contains a space or ``:`` and
    message lines stay unambiguous.  NFC makes a letter typed as base + accent
    equal to the same letter typed as one character.

    Raises :class:`NameRefused` with the reason.
    """
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise NameRefused("Имя не может быть пустым")
    if len(name) > config.MAX_NAME_CHARS:
        raise NameRefused(f"Имя длиннее {config.MAX_NAME_CHARS} символов")
    for char in name:
        if not (char.isalpha() or char.isdecimal() or char in "_-"):
            raise NameRefused(
                f"Недопустимый символ {char!r} в имени: можно только буквы, цифры, «_» и «-»"
            )
    return name


def split_command(text):
    """Split ``/word rest`` into ``("/word", "rest")``; ``word`` in lower case."""
    word, _, rest = text.partition(" ")
    return word.lower(), rest


# --- The room --------------------------------------------------------------
class Delivery(NamedTuple):
    """One line (``str``, without a final ``\\n``) and who gets it.

    From :meth:`ChatRoom.handle_many`, ``line`` may hold several lines
    joined by ``\\n``: a run of public messages to the same members.

    ``to``: a tuple of member keys, or ``None`` for every member except
    ``exclude``.  Resolve it with :meth:`ChatRoom.recipients`.  (A named
    tuple rather than a dataclass: one is made per message, and tuples are
    made fastest.)
    """

    line: str
    to: tuple = None
    exclude: object = None


@dataclass
class Outcome:
    """What the room answers to one message.

    ``deliveries``: list of :class:`Delivery` to send, in order.
    ``close``: True when the transport must close this member's connection
    after sending (the member said ``/quit``).
    """

    deliveries: list = field(default_factory=list)
    close: bool = False


class ChatRoom:
    """Members of one chat and the rules of what each message causes.

    A member is known by a *key* chosen by the transport: the connection
    object for TCP, the ``(host, port)`` address for UDP.  The room is not
    thread-safe: a threaded server calls it under one lock, which also gives
    every member the same order of messages.
    """

    def __init__(self):
        self._names = {}  # key -> name, in the order of joining
        self._keys = {}  # name.casefold() -> key, so names are unique ignoring case

    def __contains__(self, key):
        return key in self._names

    def __len__(self):
        return len(self._names)

    def name_of(self, key):
        """The name of member ``key`` (``str``); KeyError if not a member."""
        return self._names[key]

    def names(self):
        """Names of the members in the order they joined (list of ``str``)."""
        return list(self._names.values())

    def recipients(self, delivery):
        """Keys that must get ``delivery`` (a sequence).

        An addressed delivery goes to its keys even if they are not members:
        a connection still choosing its name gets its errors, and a member
        who just said ``/quit`` gets the goodbye.
        """
        if delivery.to is not None:
            return delivery.to
        return [key for key in self._names if key != delivery.exclude]

    def join(self, key, name):
        """Add a member; return the deliveries of the welcome and join notice.

        ``key``: the transport's handle of the member; ``name``: ``str`` as
        typed.  Raises :class:`NameRefused` if the name is invalid
        (:func:`validate_name`) or taken by another member, ignoring case.
        Raises ``ValueError`` if ``key`` is already a member.
        """
        if key in self._names:
            raise ValueError(f"{key!r} is already a member")
        name = validate_name(name)
        if name.casefold() in self._keys:
            raise NameRefused(f"Имя «{name}» уже занято, выберите другое")
        self._names[key] = name
        self._keys[name.casefold()] = key
        welcome = (
            f"{WELCOME_PREFIX}, {name}! {self._who_is_online()}. Список команд: /help"
        )
        return [
            Delivery(welcome, to=(key,)),
            Delivery(notice_line(f"{name} входит в чат"), exclude=key),
        ]

    def leave(self, key, reason=None):
        """Remove a member; return the leave notice for the others.

        ``reason``: ``None`` for a normal exit, or Russian text saying why the
        server dropped the member.  Leaving twice is harmless: a key that is
        not a member gets ``[]``, so the others hear of each leave exactly once.
        """
        name = self._names.pop(key, None)
        if name is None:
            return []
        del self._keys[name.casefold()]
        # Present tense: Russian past tense would need the member's gender.
        if reason:
            text = f"{name} выходит из чата: {reason}"
        else:
            text = f"{name} выходит из чата"
        return [Delivery(notice_line(text))]

    def handle(self, key, text):
        """Apply one decoded message of member ``key``; return an :class:`Outcome`.

        ``text``: ``str`` from :func:`decode_message`.  Empty text is ignored.
        Text starting with ``/`` is a command; anything else goes to every
        other member as ``NAME: TEXT`` (the sender gets no echo).
        """
        if not text:
            return Outcome()
        if text.startswith("/"):
            return self._command(key, text)
        line = public_line(self._names[key], text)
        return Outcome([Delivery(line, exclude=key)])

    def handle_many(self, key, items):
        """Apply several messages of member ``key`` in order; return one
        :class:`Outcome`.

        ``items``: what :func:`decode_lines` returns, ``str`` or
        :class:`ProtocolError`; an error is answered with an error line to
        ``key`` alone.  The rules are those of :meth:`handle`, with one
        difference in form: consecutive public messages become *one*
        :class:`Delivery` whose ``line`` holds all of them joined by ``\\n``,
        so a burst costs one delivery, not one per message.  Items after
        ``/quit`` are ignored.
        """
        outcome = Outcome()
        public = []  # texts of the current run of public messages
        for item in items:
            if isinstance(item, str) and item and not item.startswith("/"):
                public.append(item)
                continue
            self._add_public_run(key, public, outcome)
            public = []
            if isinstance(item, ProtocolError):
                step = self._reply(key, error_line(str(item)))
            else:
                step = self.handle(key, item)
            outcome.deliveries.extend(step.deliveries)
            if step.close:
                outcome.close = True
                return outcome
        self._add_public_run(key, public, outcome)
        return outcome

    def _add_public_run(self, key, texts, outcome):
        if texts:
            prefix = public_line(self._names[key], "")
            lines = prefix + ("\n" + prefix).join(texts)
            outcome.deliveries.append(Delivery(lines, exclude=key))

    # Commands ------------------------------------------------------------
    def _command(self, key, text):
        word, rest = split_command(text)
        if word == "/help":
            return self._reply(key, HELP_TEXT)
        if word == "/users":
            return self._reply(key, notice_line(self._who_is_online()))
        if word == "/msg":
            return self._private(key, rest)
        if word == "/quit":
            goodbye = Delivery(f"{GOODBYE_PREFIX}, {self._names[key]}!", to=(key,))
            return Outcome([goodbye] + self.leave(key), close=True)
        return self._reply(key, error_line(f"Неизвестная команда {word}. Список команд: /help"))

    def _private(self, key, rest):
        target_name, _, body = rest.strip(" ").partition(" ")
        body = body.strip(" ")
        if not target_name or not body:
            return self._reply(key, error_line("Формат: /msg ИМЯ ТЕКСТ"))
        target = self._keys.get(unicodedata.normalize("NFC", target_name).casefold())
        if target is None:
            return self._reply(
                key, error_line(f"Нет пользователя с именем «{target_name}». Кто в чате: /users")
            )
        if target == key:
            return self._reply(key, error_line("Нельзя отправить личное сообщение самому себе"))
        line = private_line(self._names[key], body)
        return Outcome([Delivery(line, to=(target,))])

    def _reply(self, key, line):
        return Outcome([Delivery(line, to=(key,))])

    def _who_is_online(self):
        return f"Сейчас в чате ({len(self._names)}): {', '.join(self._names.values())}"
