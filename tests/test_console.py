"""The client's terminal (chat_common.console.Console) without a terminal.

A fake readline module stands for GNU readline, so the redrawing of the
input line can be checked in a pipe; ``input()`` is replaced by a function
that plays the user.
"""

import queue
import re
import signal
import sys
import threading

import pytest

from chat_common import console as console_module
from chat_common.console import Console

ERASE = "\r\x1b[K"
"""What Console writes to remove the input line before an incoming line."""


class FakeReadline:
    """The one readline function Console uses: the half-typed input."""

    def __init__(self, typed=""):
        self.typed = typed

    def get_line_buffer(self):
        return self.typed


class FakeClient:
    """What Console.run() needs of a client: send(), close() and closed."""

    def __init__(self):
        self.sent = []
        self.closed = threading.Event()

    def send(self, text):
        self.sent.append(text)

    def close(self):
        self.closed.set()


@pytest.fixture
def restore_sigint():
    """run() installs its own SIGINT handlers; give pytest back its own."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def console(capsys):
    """A Console that believes it has readline, with "> " as the prompt."""
    shown = Console()
    shown._readline = FakeReadline("набрано")
    shown.prompt = "> "
    capsys.readouterr()
    return shown


def test_show_without_readline_prints_the_line_only(capsys, monkeypatch):
    monkeypatch.setattr(console_module, "_load_readline", lambda: None)
    plain = Console()
    assert plain.prompt == ""
    plain._running = True
    plain.show("строка")
    assert capsys.readouterr().out == "строка\n"


def test_show_before_run_does_not_draw_the_prompt(console, capsys):
    # The UDP client shows its welcome before run() reads any input: a prompt
    # drawn here was a second "> " on the screen once input() drew its own.
    console.show("*** Добро пожаловать")
    assert capsys.readouterr().out == "*** Добро пожаловать\n"


def test_show_while_reading_redraws_the_prompt_and_typed_text(console, capsys):
    console._running = True
    console.show("Анна: привет")
    assert capsys.readouterr().out == f"{ERASE}Анна: привет\n> набрано"


def test_show_during_run_redraws_the_prompt_only_while_input_is_read(
        console, capsys, monkeypatch, restore_sigint):
    def user(prompt):  # input(): draws its prompt, a line arrives meanwhile, then EOF
        sys.stdout.write(prompt)
        console.show("Борис: ответ")
        raise EOFError

    monkeypatch.setattr("builtins.input", user)
    console.show("*** Добро пожаловать")  # before run(): the welcome
    client = FakeClient()
    assert console.run(client) == 0
    console.show("*** До свидания")  # after run(): the goodbye
    assert client.closed.is_set()
    assert capsys.readouterr().out == (
        "*** Добро пожаловать\n"
        "> "  # input() draws the prompt once
        f"{ERASE}Борис: ответ\n> набрано"  # redrawn with the typed text
        "\n"  # run() leaves the input line behind
        "*** До свидания\n"
    )


class PingAnsweringClient(FakeClient):
    """A FakeClient with the ``pongs`` queue of the real clients: it answers
    every ping at once, as a server would (``*** pong SEQ RUN``)."""

    def __init__(self):
        super().__init__()
        self.pongs = queue.Queue()

    def send(self, text):
        super().send(text)
        if text.startswith("/ping "):
            self.pongs.put("*** pong " + text[len("/ping "):])


def test_typed_ping_runs_the_pinger_instead_of_chatting(capsys, monkeypatch, restore_sigint):
    monkeypatch.setattr(console_module, "_load_readline", lambda: None)
    typed = iter(["/ping x", "/PING 1", "привет"])

    def user(prompt):
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", user)
    plain = Console()
    client = PingAnsweringClient()
    assert plain.run(client) == 0
    # "/ping x" is refused before sending; "/PING 1" sends one numbered ping, no chat line.
    assert len(client.sent) == 2 and client.sent[1] == "привет", client.sent
    assert re.fullmatch(r"/ping 1 \d+", client.sent[0]), client.sent
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "!!! Формат: /ping [N], N — от 1 до 100"
    assert re.fullmatch(r"пинг 1: \d+,\d\d мс", out[1]), out
    assert out[2].startswith("--- отправлено 1, получено 1, потеряно 0 %; RTT мин/сред/макс = ")
    assert len(out) == 3, out
