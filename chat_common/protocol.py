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

from dataclasses import dataclass, field
from typing import NamedTuple

from chat_common import config
from chat_common.framing import LINE_TOO_LONG
# Re-exported: the transports and tests reach every rule through this module.
from chat_common.text import (MessageRefused, NameRefused, ProtocolError,  # noqa: F401
                              decode_message, listing, name_key, number, plural,
                              too_long_text, validate_name)

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
PING_COMMAND = "/ping"  # answered with PONG + what followed: the UDP heartbeat, the pinger
PONG = NOTICE_PREFIX + "pong"
QUIT_COMMAND = "/quit"


def server_full_line(max_clients):
    """TCP: the error for a connection beyond ``max_clients`` (int), before it is closed."""
    connections = plural(max_clients, "подключение", "подключения", "подключений")
    return error_line(f"Сервер переполнен ({connections}), попробуйте позже")


def name_timeout_line(seconds):
    """TCP: the error for a connection that gave no name within ``seconds`` (float)."""
    return error_line(f"Время на выбор имени истекло ({seconds:g} с)".replace(".", ","))


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
    ``join_command``: False (TCP): the first line after the prompt is the
    name; True (UDP): the first datagram must be ``/join NAME``, and the
    welcome stays within ``config.MAX_FIRST_REPLY_BYTES`` (no amplifier for
    forged addresses).  ``max_members``: None, or most members (int).
    """

    def __init__(self, *, join_command=False, max_members=None,
                 max_message_bytes=config.MAX_MESSAGE_BYTES):
        self.join_command = join_command
        self.max_members = max_members
        self.max_message_bytes = max_message_bytes
        self._names = {}  # key -> name, in the order of joining
        self._keys = {}  # name_key(name) -> key, so look-alike names are one name
        self._attempts = {}  # TCP newcomer key -> refused lines in a row

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
        if key in self._names or self.join_command:
            return outcome
        # A TCP newcomer is asked again, but not without end: each answer
        # costs the server work and memory, so a run of refusals ends it.
        self._attempts[key] = self._attempts.get(key, 0) + 1
        if self._attempts[key] >= config.MAX_NAME_ATTEMPTS:
            tries = plural(config.MAX_NAME_ATTEMPTS, "неудачная попытка", "неудачные попытки",
                           "неудачных попыток")
            outcome.deliveries.append(Delivery(
                error_line(f"{tries} выбрать имя подряд — соединение закрыто"), to=(key,)))
            outcome.close = True
        else:
            outcome.deliveries.append(Delivery(NAME_PROMPT, to=(key,)))
        return outcome

    def join(self, key, name):
        """Add member ``key`` named ``name`` (``str`` as typed); return the
        welcome and join notice.  Raises :class:`NameRefused` if the chat is
        full (``max_members``), the name is invalid (:func:`validate_name`) or
        taken, compared by :func:`name_key`; ``ValueError`` if ``key`` is
        already a member."""
        if key in self._names:
            raise ValueError(f"{key!r} is already a member")
        if self.max_members is not None and len(self._names) >= self.max_members:
            members = plural(self.max_members, "участник", "участника", "участников")
            raise NameRefused(f"Чат заполнен ({members}), попробуйте позже")
        name = validate_name(name)
        if name_key(name) in self._keys:
            raise NameRefused(f"Имя «{name}» уже занято, выберите другое")
        self._names[key] = name
        self._keys[name_key(name)] = key
        self._attempts.pop(key, None)
        return [self._welcome(key), Delivery(notice_line(f"{name} входит в чат"), exclude=key)]

    def _welcome(self, key):
        limit = config.MAX_FIRST_REPLY_BYTES if self.join_command else config.MAX_REPLY_BYTES
        welcome = self._who_is_online(f"{WELCOME_PREFIX}, {self._names[key]}! ",
                                      ". Список команд: /help", limit)
        return Delivery(welcome, to=(key,))

    def leave(self, key, reason=None):
        """Remove a member; return the leave notice for the others (``[]`` for a
        non-member: each leave is told once).  ``reason``: None or Russian text."""
        return self.leave_all([key], reason)

    def leave_all(self, keys, reason=None):
        """Remove several members at once; return *one* leave notice for the
        others (so removing N members costs N sends, not N²)."""
        names = [self._remove(key) for key in keys]
        names = [name for name in names if name is not None]
        if not names:
            return []
        # Present tense: Russian past tense would need the member's gender.
        tail = f": {reason}" if reason else ""
        if len(names) == 1:
            return [Delivery(notice_line(f"{names[0]} выходит из чата{tail}"))]
        head = notice_line(f"Из чата выходят ({number(len(names))}): ")
        return [Delivery(head + listing(names, _room_for(head, tail)) + tail)]

    def _remove(self, key):
        self._attempts.pop(key, None)
        name = self._names.pop(key, None)
        if name is not None:
            del self._keys[name_key(name)]
        return name

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
            return self._reply(key, self._who_is_online(NOTICE_PREFIX))
        if word == "/msg":
            return self._private(key, rest)
        if word == PING_COMMAND:  # echoed, so a pinger can match answer to question
            return self._reply(key, f"{PONG} {rest}".rstrip())
        if word == JOIN_COMMAND and name_key(rest.strip()) == name_key(name):
            return Outcome([self._welcome(key)])  # a retransmitted /join: welcome again, only
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
        target = self._keys.get(name_key(target_name))
        if target is None:
            return self._reply(key, error_line(
                f"Нет пользователя с именем «{target_name}». Кто в чате: /users"))
        if target == key:
            return self._reply(key, error_line("Нельзя отправить личное сообщение самому себе"))
        return Outcome([Delivery(private_line(self._names[key], body), to=(target,))])

    def _reply(self, key, line):
        return Outcome([Delivery(line, to=(key,))])

    def _who_is_online(self, head, tail="", max_bytes=config.MAX_REPLY_BYTES):
        head += f"Сейчас в чате ({number(len(self._names))}): "
        return head + listing(self.names(), _room_for(head, tail, max_bytes)) + tail


def _room_for(head, tail, max_bytes=config.MAX_REPLY_BYTES):
    """Bytes left for a list of names in a line ``head + list + tail + "\\n"``."""
    return max_bytes - len((head + tail).encode(config.ENCODING)) - 1
