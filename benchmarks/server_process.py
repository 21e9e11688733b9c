"""The server under test, in a process of its own: start, watch, measure, stop.

The server starts on a free loopback port (``--port 0``); its bound address
is read from its start-up log line (``... Сервер TCP слушает 127.0.0.1:PORT``;
stderr goes to a temporary file, so that logging slows neither the server
nor the harness).  Variants (:data:`VARIANTS`):

``tcp``      ``python -m tcp_chat.server``: thread per client
``select``   ``python -m tcp_chat.select_server``: one thread, an event loop
``udp``      ``python -m udp_chat.server --client-timeout 3600`` (members of
             the benchmark send no heartbeats, so the timeout is made long)
``naive``    ``python -m benchmarks.naive_server``: the classic, deliberately
             wrong lab answer (raw chunks forwarded), as the baseline
``ceiling``  ``python -m benchmarks.forwarder``: a trivial forwarder; the
             figures of this variant are the harness's own ceiling

``--max-clients`` of both TCP chat servers is raised above the members of
the run.  The server is stopped as Ctrl+C would stop it (SIGINT, or SIGTERM
where SIGINT is ignored) and killed after ``STOP_TIMEOUT`` seconds; callers
stop it in a ``finally`` block, so no server is ever left behind.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from chat_common import config

try:
    import psutil
except ImportError:  # optional: /proc is read on Linux instead
    psutil = None

ROOT = Path(__file__).resolve().parent.parent

VARIANTS = {
    # name: (module run with -m, transport)
    "tcp": ("tcp_chat.server", "tcp"),
    "select": ("tcp_chat.select_server", "tcp"),
    "udp": ("udp_chat.server", "udp"),
    "naive": ("benchmarks.naive_server", "tcp"),
    "ceiling": ("benchmarks.forwarder", "tcp"),
}

UDP_CLIENT_TIMEOUT = 3600.0
"""``--client-timeout`` of the UDP server: members of the benchmark send no
heartbeats, so they must not be removed as silent during a run."""

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

_ADDRESS_RE = re.compile(r"слушает\s+(\S+):(\d+)\s*$", re.MULTILINE)

_FATAL = (  # (text in the server's log, the Russian reason)
    ("can't start new thread", "сервер не смог создать поток (can't start new thread)"),
    ("Too many open files", "у сервера кончились дескрипторы файлов (EMFILE)"),
    ("MemoryError", "серверу не хватило памяти (MemoryError)"),
)


class BenchError(RuntimeError):
    """A run that cannot go on (server did not start, join refused, ...);
    ``str(error)`` is the Russian reason."""


def child_env():
    """Environment of child processes: the kit's folder first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def ensure_fd_limit(members):
    """Raise the soft limit of open files (inherited by the server) if the
    run needs more: one socket per member here and one in the server."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    needed = members + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass  # the join will fail with a clear EMFILE error instead


class ServerProcess:
    """The server under test in its own process; stderr goes to a temp file.

    ``variant``: a key of :data:`VARIANTS`; ``members``: how many will join
    (raises the TCP servers' ``--max-clients`` when needed).
    """

    def __init__(self, variant, members=0):
        module, self.transport = VARIANTS[variant]
        args = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
        if variant in ("tcp", "select"):
            args += ["--max-clients", str(max(config.MAX_CLIENTS, members + 16))]
        elif variant == "udp":
            args += ["--client-timeout", f"{UDP_CLIENT_TIMEOUT:g}"]
        fd, self.log_path = tempfile.mkstemp(prefix="chat_bench_", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=str(ROOT), env=child_env(),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log)
        self.pid = self.proc.pid
        self.exit = None
        self._ps = psutil.Process(self.pid) if psutil else None
        self._log_seen = 0  # bytes of the log already looked at by problem()
        try:
            self.address = self._wait_address()
        except BaseException:
            self.stop()
            raise

    def _wait_address(self):
        deadline = time.monotonic() + START_TIMEOUT
        pause = threading.Event()
        while True:
            match = _ADDRESS_RE.search(self.log_text())
            if match:
                return match.group(1).strip("[]"), int(match.group(2))
            if self.proc.poll() is not None:
                raise BenchError(f"сервер завершился при запуске (код {self.proc.returncode}): "
                                 f"{self.log_text()[-500:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"сервер не сообщил адрес за {START_TIMEOUT:g} с")
            pause.wait(0.01)  # nothing to wait on but the log file

    def log_text(self):
        """What the server wrote to stderr so far (str)."""
        try:
            with open(self.log_path, "rb") as log:
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def problem(self):
        """Why the server cannot serve any more (Russian str), or None: it has
        exited, or its log shows a fatal error (no thread, no descriptor, no
        memory).  Reads only what the log gained since the last call."""
        if self.proc.poll() is not None:
            return f"сервер завершился (код {self.proc.returncode})"
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(self._log_seen - 64, 0))  # a pattern may straddle two reads
                new = log.read().decode("utf-8", "replace")
                self._log_seen = log.tell()
        except OSError:
            return None
        for text, reason in _FATAL:
            if text in new:
                return reason
        return None

    def _status_field(self, field):
        """An int field of /proc/PID/status (Linux), or None."""
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def cpu_seconds_precise(self):
        """CPU seconds of the server's live threads in ns resolution (Linux), else None.

        From ``/proc/PID/task/*/schedstat``; threads that ended are not
        counted, so it only serves for a difference over a short window.
        """
        total = 0
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                try:
                    with open(f"/proc/{self.pid}/task/{tid}/schedstat") as stat:
                        total += int(stat.read().split()[0])
                except (OSError, ValueError, IndexError):
                    pass  # the thread just ended
        except OSError:
            return None
        return total / 1e9

    def cpu_seconds(self):
        """User + system CPU seconds of the server so far (float or None).

        Clock-tick resolution (10 ms on Linux), all threads, ended ones too.
        """
        try:
            if self._ps is not None:
                times = self._ps.cpu_times()
                return times.user + times.system
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError) + ((psutil.Error,) if psutil else ()):
            return None

    def peak_rss_mb(self):
        """Peak resident memory in MB (VmHWM on Linux; else current RSS)."""
        kb = self._status_field("VmHWM")
        if kb is not None:
            return kb / 1024
        if self._ps is not None:
            try:
                info = self._ps.memory_info()
                return getattr(info, "peak_wset", info.rss) / 2**20
            except psutil.Error:
                return None
        return None

    def rss_mb(self):
        """Resident memory now in MB (VmRSS on Linux, else psutil), or None."""
        kb = self._status_field("VmRSS")
        if kb is not None:
            return kb / 1024
        if self._ps is not None:
            try:
                return self._ps.memory_info().rss / 2**20
            except psutil.Error:
                return None
        return None

    def thread_count(self):
        """Threads of the server now (``Threads:`` on Linux, else psutil), or None."""
        count = self._status_field("Threads")
        if count is None and self._ps is not None:
            try:
                count = self._ps.num_threads()
            except psutil.Error:
                return None
        return count

    def stop(self, timeout=STOP_TIMEOUT):
        """Stop as Ctrl+C would, kill after ``timeout`` seconds; idempotent.

        SIGINT; but SIGTERM if this process ignores SIGINT (a shell starts
        background jobs so, and the child inherits it: SIGINT would do
        nothing); every server here treats SIGTERM as Ctrl+C.  Windows has
        neither for a child: terminate().  ``exit`` becomes ``"signal"``,
        ``"killed"`` or ``"exited (CODE)"``.
        """
        if self.proc.poll() is None:
            try:
                if os.name == "nt":
                    self.proc.terminate()
                elif signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
                    self.proc.send_signal(signal.SIGTERM)
                else:
                    self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout)
                self.exit = self.exit or "signal"
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit = "killed"
        else:
            self.exit = self.exit or f"exited ({self.proc.returncode})"
        try:
            os.unlink(self.log_path)
        except OSError:
            pass
