"""Real chat sessions for the report: three users, each variant.

The build starts a server of each variant in this process on 127.0.0.1,
port 0 (a free port), connects three library clients
(``tcp_chat.client.ChatClient``, ``udp_chat.client.ChatClient``) and plays
a fixed script.  After every step it waits, with ``queue.get(timeout)``, for
exactly the lines that step must bring to each user, so every user's
transcript comes out in one and the same order on every run; nothing
depends on sleeping.  The transcripts hold no ports and no times, so the
report text is the same on every build while the code stays the same.

A line a user *sent* is written ``> TEXT``; every other line is what that
user's client received, exactly as the server sent it.
"""

import queue
import socket
from dataclasses import dataclass, field

from chat_common import config
from chat_common import protocol

HOST = "127.0.0.1"
WAIT = 5.0
"""Seconds to wait for one expected line; only reached if something is broken."""

SENT = "> "


class DemoError(RuntimeError):
    """The session did not go as the script says (the build stops)."""


@dataclass
class Step:
    """One action of the script: ``who`` sends ``text``; ``expect`` maps a
    user to the number of lines that user must receive because of it."""

    who: str
    text: str
    expect: dict
    note: str = ""


@dataclass
class Session:
    """The outcome of one scripted session."""

    variant: str
    users: list
    steps: list  # (who, text, note) in the order played
    seen: dict = field(default_factory=dict)  # user -> list of lines
    extra: list = field(default_factory=list)  # (title, lines) shown after the users


def _take(user, client, count, seen):
    for _ in range(count):
        try:
            line = client.lines.get(timeout=WAIT)
        except queue.Empty:
            raise DemoError(f"{user}: не пришла ожидаемая строка за {WAIT:g} с; "
                            f"уже получено: {seen[user][-5:]}") from None
        seen[user].append(line)


def _check_quiet(clients, seen):
    """After the script no user may have an unexpected line waiting."""
    for user, client in clients.items():
        try:
            line = client.lines.get(timeout=0.05)
        except queue.Empty:
            continue
        raise DemoError(f"{user}: лишняя строка после сценария: {line!r}")


# The conversation, shared by both variants.  Names: Анна, Борис, Вера.
A, B, V = "Анна", "Борис", "Вера"
USERS = [A, B, V]
EVERYONE = {A: 1, B: 1, V: 1}


def chat_steps():
    """The part of the script after all three users have joined."""
    return [
        Step(A, "Всем привет! Проверяем чат.", {B: 1, V: 1}, "сообщение всем"),
        Step(B, "Привет, Анна! Слышно хорошо.", {A: 1, V: 1}, "ответ всем"),
        Step(V, "/help", {V: 1}, "справка"),
        Step(V, "/users", {V: 1}, "кто в чате"),
        Step(V, "/msg анна Анна, ты завтра на семинаре?", {A: 1},
             "личное сообщение (имя без учёта регистра)"),
        Step(A, "/msg Вера Да, приду к девяти.", {V: 1}, "личный ответ"),
        Step(B, "/msg Дмитрий Ты где?", {B: 1}, "ошибка: нет такого пользователя"),
        Step(B, "/kick Вера", {B: 1}, "ошибка: неизвестная команда"),
        Step(B, "/quit", EVERYONE, "выход Бориса"),
        Step(A, "Борис ушёл, продолжаем вдвоём.", {V: 1}, "сообщение всем"),
        Step(A, "/quit", {A: 1, V: 1}, "выход Анны"),
        Step(V, "/quit", {V: 1}, "выход Веры"),
    ]


def _play(session, clients, steps, seen):
    for step in steps:
        seen[step.who].append(SENT + step.text)
        session.steps.append((step.who, step.text, step.note))
        clients[step.who].send(step.text)
        for user, count in step.expect.items():
            _take(user, clients[user], count, seen)
        if step.text == "/quit":
            if not clients[step.who].closed.wait(WAIT):
                raise DemoError(f"{step.who}: сервер не закрыл сеанс после /quit")


# --- TCP ---------------------------------------------------------------------
def tcp_session():
    """Play the script over TCP; return a :class:`Session`."""
    from tcp_chat.client import ChatClient
    from tcp_chat.server import ChatServer

    session = Session("TCP", USERS, [])
    seen = session.seen = {user: [] for user in USERS}
    clients = {}
    with ChatServer(HOST, 0) as server:
        host, port = server.address
        try:
            def connect(user, tries, expect):
                # Without a name the client hands every line to the queue,
                # the name prompt included, and the first line sent is the name.
                clients[user] = client = ChatClient(host, port)
                _take(user, client, 1, seen)  # the name prompt
                for name in tries[:-1]:  # refused names: error + prompt again
                    seen[user].append(SENT + name)
                    session.steps.append((user, name, "занятое имя"))
                    client.send(name)
                    _take(user, client, 2, seen)
                seen[user].append(SENT + tries[-1])
                session.steps.append((user, tries[-1], "вход в чат"))
                client.send(tries[-1])
                for other, count in expect.items():
                    _take(other, clients[other], count, seen)

            connect(A, [A], {A: 1})
            connect(B, ["анна", B], {B: 1, A: 1})
            connect(V, [V], {V: 1, A: 1, B: 1})
            _play(session, clients, chat_steps(), seen)
            _check_quiet(clients, seen)
        finally:
            for client in clients.values():
                client.close(timeout=1.0)
    return session


# --- UDP ---------------------------------------------------------------------
def udp_session():
    """Play the script over UDP; return a :class:`Session`."""
    from udp_chat.client import ChatClient
    from udp_chat.server import ChatServer

    session = Session("UDP", USERS, [])
    seen = session.seen = {user: [] for user in USERS}
    clients = {}
    # Heartbeats every minute: the session is over long before the first one,
    # so no /ping goes out while the script runs.
    heartbeat = 60.0
    with ChatServer(HOST, 0) as server:
        host, port = server.address
        try:
            def join(user, tries, expect):
                for name in tries:
                    seen[user].append(f"{SENT}/join {name}")
                    refused = name != tries[-1]
                    session.steps.append((user, f"/join {name}",
                                          "занятое имя" if refused else "вход в чат"))
                    try:
                        client = ChatClient(host, port, name, heartbeat=heartbeat,
                                            timeout=WAIT)
                    except protocol.NameRefused as error:
                        if not refused:
                            raise DemoError(f"{user}: имя {name!r} отвергнуто: {error}") from None
                        seen[user].append(protocol.error_line(str(error)))
                        continue
                    if refused:
                        client.close(timeout=1.0)
                        raise DemoError(f"{user}: имя {name!r} должно было быть занято")
                    seen[user].append(client.welcome)
                clients[user] = client
                for other, count in expect.items():
                    _take(other, clients[other], count, seen)

            join(A, [A], {})
            join(B, ["анна", B], {A: 1})
            join(V, [V], {A: 1, B: 1})

            # A datagram from an address that has not joined (as from nc -u).
            stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                stranger.settimeout(WAIT)
                text = "Привет! Я без /join"
                stranger.sendto(text.encode(config.ENCODING), (host, port))
                reply = stranger.recv(65535).decode(config.ENCODING).rstrip("\n")
            finally:
                stranger.close()
            session.extra.append(("Посторонний адрес без /join (как из nc -u)",
                                  [SENT + text, reply]))

            _play(session, clients, chat_steps(), seen)
            _check_quiet(clients, seen)
        finally:
            for client in clients.values():
                client.close(timeout=1.0)
    return session


def run_all():
    """Both sessions: ``{"TCP": Session, "UDP": Session}``."""
    return {"TCP": tcp_session(), "UDP": udp_session()}
