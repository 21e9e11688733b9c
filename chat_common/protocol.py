"""The chat rules, with no I/O at all (the "sans-I/O" pattern of h11): no
socket, thread or clock.  The servers hand every received line or datagram to
:meth:`ChatRoom.receive` and send the :class:`Delivery` lines it answers.

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
from chat_common.framing import LINE_TOO_LONG

NOTICE_PREFIX = "*** "
ERROR_PREFIX = "!!! "


def public_line(name, text):
    """Format a public message: ``NAME: TEXT``."""
    return f"{name}: {text}"


def private_line(name, text):
    """Format a private message: ``NAME (лично): TEXT``."""
    return f"{name} (лично): {text}"


def notice_line(text):
    """Format a server notice: ``*** TEXT``."""
    return NOTICE_PREFIX + text


def error_line(text):
    """Format an error about the client's own input: ``!!! TEXT``."""
    return ERROR_PREFIX + text


def encode_line(line):
    """Encode one line for the wire: UTF-8 with a trailing ``\\n`` (bytes)."""
    return (line + "\n").encode(config.ENCODING)


NAME_PROMPT = notice_line("Введите имя (буквы, цифры, «_» или «-», до 32 символов):")
WELCOME_PREFIX = NOTICE_PREFIX + "Добро пожаловать"
SHUTDOWN_NOTICE = notice_line("Сервер останавливается. До свидания!")
HELP_TEXT = notice_line("Команды: /users — кто в чате; /msg ИМЯ ТЕКСТ — личное сообщение; "
                        "/quit — выйти; /help — эта справка. Любой другой текст получат все.")
GOODBYE_PREFIX = NOTICE_PREFIX + "До свидания"
SLOW_READER_REASON = "не успевает получать сообщения"
SILENT_REASON = "нет связи (не приходят сигналы присутствия)"
JOIN_FIRST = error_line("Сначала войдите в чат: /join ИМЯ")  # UDP: to a newcomer's non-/join
JOIN_COMMAND = "/join"
PING_COMMAND = "/ping"  # the UDP client's heartbeat; a no-op command in both variants
QUIT_COMMAND = "/quit"


class ProtocolError(ValueError):
    """Input that breaks a chat rule; ``str(error)`` is the Russian reason."""


class NameRefused(ProtocolError):
    """A name that is invalid or already taken."""


class MessageRefused(ProtocolError):
    """A message that is too long, not UTF-8, or has control characters."""


# --- Messages and names ----------------------------------------------------
# C0 controls except tab, DEL and C1 controls: ESC among them starts terminal
# escape sequences, which must never reach another user's screen.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def decode_message(raw, max_bytes=config.MAX_MESSAGE_BYTES):
    """Turn the bytes of one message (a line or a datagram) into ``str``.
    One line ending (``\\n``, ``\\r\\n`` or ``\\r``, as ``nc`` sends) is
    dropped.  ``max_bytes``: longest message in bytes without the ending.
    Raises :class:`MessageRefused` when the message is longer, is not valid
    UTF-8, or has a control character other than tab."""
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


def validate_name(name):
    """Check a user name (``str``) and return it in Unicode normal form NFC.
    A valid name has 1 to ``config.MAX_NAME_CHARS`` characters, each a letter
    of any alphabet, a decimal digit, ``_`` or ``-`` (no space or ``:``, so
    lines stay unambiguous).  NFC makes "И" + breve equal to "Й".  Raises
    :class:`NameRefused` with the reason."""
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise NameRefused("Имя не может быть пустым")
    if len(name) > config.MAX_NAME_CHARS:
        raise NameRefused(f"Имя длиннее {config.MAX_NAME_CHARS} символов")
    for char in name:
        if not (char.isalpha() or char.isdecimal() or char in "_-"):
            raise NameRefused(
                f"Недопустимый символ {char!r} в имени: можно только буквы, цифры, «_» и «-»")
    return name


def split_command(text):
    """Split ``/word rest`` into ``("/word", "rest")``; ``word`` in lower case."""
    word, _, rest = text.partition(" ")
    return word.lower(), rest


# --- The room --------------------------------------------------------------
class Delivery(NamedTuple):
    """One line (``str``, no ``\\n``) and who gets it: the keys in ``to`` (a
    tuple), or if ``to`` is None every member but ``exclude`` (see recipients)."""

    line: str
    to: tuple = None
    exclude: object = None


@dataclass
class Outcome:
    """What the room answers to one received message: ``deliveries`` (list of
    :class:`Delivery`, in order); ``close``, True when the transport must end
    this key's session after sending (``/quit``); ``joined``, the name of a
    newcomer who has just joined; ``text``, the decoded message (for a log)."""

    deliveries: list = field(default_factory=list)
    close: bool = False
    joined: str = None
    text: str = None


class ChatRoom:
    """Members of one chat and the rules of what each message causes.

    A member is known by a *key* chosen by the transport: the connection for
    TCP, the ``(host, port)`` address for UDP.  Not thread-safe: a threaded
    server calls it under one lock, which also gives all one order of lines.
    ``join_command``: False (TCP): the server prompted on connecting, and the
    first line is the name; True (UDP): no connection to prompt on, so the
    first datagram must be ``/join NAME``.  ``max_message_bytes``: see
    :func:`decode_message`.
    """

    def __init__(self, *, join_command=False, max_message_bytes=config.MAX_MESSAGE_BYTES):
        self.join_command = join_command
        self.max_message_bytes = max_message_bytes
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
        """Keys that must get ``delivery`` (a sequence).  Addressed keys need
        not be members: a newcomer gets his errors, a leaver his goodbye."""
        if delivery.to is not None:
            return delivery.to
        return [key for key in self._names if key != delivery.exclude]

    def receive(self, key, data):
        """Apply one message received from ``key``; return an :class:`Outcome`.
        ``data``: one line from ``LineFramer.feed`` (``bytes`` or
        ``LINE_TOO_LONG``) or one datagram (``bytes``).  A refused message gets
        an error line; a newcomer's message is his attempt to join; a
        member's goes to :meth:`handle`."""
        try:
            if data is LINE_TOO_LONG:
                raise MessageRefused(too_long_text(self.max_message_bytes))
            text = decode_message(data, self.max_message_bytes)
        except MessageRefused as error:
            return self._refuse(key, error)
        outcome = self.handle(key, text) if key in self._names else self._newcomer(key, text)
        outcome.text = text
        return outcome

    def _newcomer(self, key, text):
        word, rest = split_command(text.strip())
        if self.join_command and word != JOIN_COMMAND:
            return self._reply(key, JOIN_FIRST)
        if not self.join_command and word == QUIT_COMMAND:  # leave at the prompt
            return Outcome([Delivery(f"{GOODBYE_PREFIX}!", to=(key,))], close=True)
        try:
            deliveries = self.join(key, rest.strip() if self.join_command else text)
        except NameRefused as error:
            return self._refuse(key, error)
        return Outcome(deliveries, joined=self._names[key])

    def _refuse(self, key, error):
        outcome = self._reply(key, error_line(str(error)))
        if key not in self._names and not self.join_command:  # a TCP newcomer: ask again
            outcome.deliveries.append(Delivery(NAME_PROMPT, to=(key,)))
        return outcome

    def join(self, key, name):
        """Add member ``key`` named ``name`` (``str`` as typed); return the
        welcome and join notice.  Raises :class:`NameRefused` if the name is
        invalid (:func:`validate_name`) or taken, ignoring case; ``ValueError``
        if ``key`` is already a member."""
        if key in self._names:
            raise ValueError(f"{key!r} is already a member")
        name = validate_name(name)
        if name.casefold() in self._keys:
            raise NameRefused(f"Имя «{name}» уже занято, выберите другое")
        self._names[key] = name
        self._keys[name.casefold()] = key
        welcome = f"{WELCOME_PREFIX}, {name}! {self._who_is_online()}. Список команд: /help"
        return [Delivery(welcome, to=(key,)),
                Delivery(notice_line(f"{name} входит в чат"), exclude=key)]

    def leave(self, key, reason=None):
        """Remove a member; return the leave notice for the others.  ``reason``:
        None, or Russian text saying why the server dropped him.  A key that is
        not a member gets ``[]``, so each leave is announced exactly once."""
        name = self._names.pop(key, None)
        if name is None:
            return []
        del self._keys[name.casefold()]
        # Present tense: Russian past tense would need the member's gender.
        text = f"{name} выходит из чата: {reason}" if reason else f"{name} выходит из чата"
        return [Delivery(notice_line(text))]

    def handle(self, key, text):
        """Apply one decoded message (``str``) of member ``key``; return an
        :class:`Outcome`.  Text of only spaces and tabs is ignored; text
        starting with ``/`` is a command; anything else goes to every other
        member as ``NAME: TEXT`` (the sender gets no echo)."""
        if not text.strip(" \t"):
            return Outcome()
        if text.startswith("/"):
            return self._command(key, text)
        return Outcome([Delivery(public_line(self._names[key], text), exclude=key)])

    def _command(self, key, text):
        word, rest = split_command(text)
        name = self._names[key]
        if word == "/help":
            return self._reply(key, HELP_TEXT)
        if word == "/users":
            return self._reply(key, notice_line(self._who_is_online()))
        if word == "/msg":
            return self._private(key, rest)
        if word == PING_COMMAND:
            return Outcome()  # a heartbeat only shows the member is alive
        if word == JOIN_COMMAND:
            return self._reply(key, error_line(f"Вы уже в чате под именем {name}"))
        if word == QUIT_COMMAND:
            goodbye = Delivery(f"{GOODBYE_PREFIX}, {name}!", to=(key,))
            return Outcome([goodbye] + self.leave(key), close=True)
        return self._reply(key, error_line(f"Неизвестная команда {word}. Список команд: /help"))

    def _private(self, key, rest):
        target_name, _, body = rest.strip(" ").partition(" ")
        body = body.strip(" ")
        if not target_name or not body:
            return self._reply(key, error_line("Формат: /msg ИМЯ ТЕКСТ"))
        target = self._keys.get(unicodedata.normalize("NFC", target_name).casefold())
        if target is None:
            return self._reply(key, error_line(
                f"Нет пользователя с именем «{target_name}». Кто в чате: /users"))
        if target == key:
            return self._reply(key, error_line("Нельзя отправить личное сообщение самому себе"))
        return Outcome([Delivery(private_line(self._names[key], body), to=(target,))])

    def _reply(self, key, line):
        return Outcome([Delivery(line, to=(key,))])

    def _who_is_online(self):
        return f"Сейчас в чате ({len(self._names)}): {', '.join(self._names.values())}"
