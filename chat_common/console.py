"""The client's terminal, shared by both variants (TCP and UDP).

:class:`Console`: the client's main thread reads what the user types and
hands it to a client object; the client's receiver thread calls
:meth:`Console.show` for every incoming line.  A client object needs
``send(text)``, ``close()`` and a ``threading.Event`` named ``closed``; both
``tcp_chat.client.ChatClient`` and ``udp_chat.client.ChatClient`` have them.
"""

import os
import signal
import sys
import threading

from chat_common import pinger
from chat_common.protocol import (PING_COMMAND, SHUTDOWN_NOTICE, ProtocolError, error_line,
                                  split_command)

LOST_NOTICE = "*** Соединение с сервером потеряно"
"""What a TCP client says when the connection ends without the server's stop notice."""


def _load_readline():
    # readline only matters in a terminal; importing it for a pipe could
    # write terminal control codes into the output.  Windows has none.
    if not sys.stdin.isatty():
        return None
    try:
        import readline
    except ImportError:
        return None
    return readline


class Console:
    """Shows incoming lines without garbling what the user is typing.

    In a terminal with GNU readline, an incoming line is printed above the
    input line and the half-typed text is drawn again after it.  Elsewhere
    (pipes, Windows) lines are simply printed.
    """

    def __init__(self, lost_notice=LOST_NOTICE):
        self.lost_notice = lost_notice  # UDP has no connection to lose: it says its own
        self._readline = _load_readline()
        self.prompt = "> " if self._readline else ""
        self._output = threading.Lock()  # one line at a time on the screen
        self._state = threading.Lock()  # orders "connection lost" against run()
        self._running = False  # run() is reading input and may be interrupted
        self._quitting = False
        self._stopped_reading = threading.Event()  # set when run() stops reading input
        self.lost = False
        self.stop_announced = False  # the server said goodbye: its end is a stop, not a loss
        # A chat line must never kill the receiver thread: where stdout cannot
        # encode a letter (a Windows pipe uses the ANSI code page), print "?".
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="replace")

    def show(self, line):
        """Print one incoming line (``str``); safe to call from any thread."""
        with self._output:
            if self._readline and self._running and not self._quitting:
                typed = self._readline.get_line_buffer()
                # \r and "erase line" remove the input line, then draw it again.
                sys.stdout.write(f"\r\x1b[K{line}\n{self.prompt}{typed}")
            else:
                sys.stdout.write(line + "\n")
            sys.stdout.flush()
            self.stop_announced = self.stop_announced or line == SHUTDOWN_NOTICE

    def connection_closed(self):
        """Called by the receiver thread when the server side is gone.  After
        the server's stop notice nothing more is said and the exit code is 0;
        otherwise :attr:`lost_notice` is shown and the exit code is 1."""
        if self._quitting:
            return  # the answer to our own /quit: nothing is lost
        if not self.stop_announced:
            self.show(self.lost_notice)
        with self._state:
            self.lost = True
            # Before run() the main thread is still connecting or sending the
            # name, where an interrupt would surface as a traceback; run()
            # sees ``lost`` and does not start reading.
            running = self._running
        # A signal that lands just before input() starts its read is lost (the
        # read then blocks for good), so repeat it until run() has let go.
        while running and not self._quitting:
            _interrupt_main_thread()
            self._stopped_reading.wait(INTERRUPT_REPEAT)

    def run(self, client):
        """Send typed lines until ``/quit``, EOF or Ctrl+C; return the exit code.

        Must run in the main thread.  Exit code 0 after the user's ``/quit``,
        end of input, Ctrl+C or the server's announced stop; 1 if the server
        was lost first.
        """
        # The receiver thread wakes us with SIGINT, so it must not stay ignored
        # (a shell starts background jobs with SIGINT ignored).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with self._state:
                self._running = True
                lost_already = self.lost
            if not lost_already:
                self._send_typed_lines(client)
        except KeyboardInterrupt:
            pass  # Ctrl+C, or the receiver thread telling us the server is gone
        except OSError:
            self.lost = True
        # From here on, a late wake-up from the receiver thread must not
        # interrupt the goodbye with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self._readline:
            sys.stdout.write("\n")  # leave the half-typed input line behind
        self._quitting = True
        self._stopped_reading.set()
        client.close()
        return 1 if self.lost and not self.stop_announced else 0

    def _send_typed_lines(self, client):
        while not client.closed.is_set():
            try:
                text = input(self.prompt)
            except EOFError:
                return  # end of piped input, or Ctrl+D: leave politely
            if text.strip().lower() == "/quit":
                return  # client.close() says /quit and waits for the answer
            try:
                if split_command(text.strip())[0] == PING_COMMAND:  # measure, do not chat
                    pinger.ping(client, pinger.parse_count(text), self.show)
                else:
                    client.send(text)
            except ProtocolError as error:  # refused before sending: say why, go on
                self.show(error_line(str(error)))


INTERRUPT_REPEAT = 0.2
"""Seconds between two wake-up signals to a main thread still in ``input()``."""


def _interrupt_main_thread():
    """Wake the main thread blocked in ``input()``.

    A blocking read of the terminal cannot be cancelled from another thread.
    On POSIX a SIGINT sent to the main thread makes ``input()`` raise
    KeyboardInterrupt, as Ctrl+C would, and readline restores the terminal.
    Windows has no such signal for one thread, so the process ends here.
    """
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        sys.stdout.flush()
        os._exit(1)
