"""The benchmark harness: small real runs of every variant, the CLI, the
content-based counting, deadlines, and that no server process is left behind.

Every run here is tiny (a few members, tens to hundreds of messages) so each
test takes a few seconds; the figures themselves are not checked, only that
they are present and sane.
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks import chat_bench
from benchmarks.sender import make_message

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent

LATENCY_KEYS = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms",
                "latency_p99_worst_member_ms")


def process_gone(pid):
    """True if no process ``pid`` runs (a zombie counts as gone: it was waited for)."""
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def no_children_left():
    psutil = pytest.importorskip("psutil")
    return psutil.Process().children(recursive=True) == []


def assert_sane(result):
    """Fields every completed run has, whatever the variant."""
    assert result["error"] is None, result["error"]
    assert set(chat_bench.RESULT_KEYS) == set(result)
    assert result["joined"] == result["clients"] + result["slow_readers"]
    assert result["join_s"] >= 0
    assert 0 < result["received"] <= result["expected"]
    assert result["lost"] == result["expected"] - result["received"]
    for key in LATENCY_KEYS:
        assert result[key] is not None and result[key] >= 0, key
    assert result["latency_p50_ms"] <= result["latency_p99_ms"] <= result["latency_max_ms"]
    assert result["deliveries_per_s"] > 0
    assert result["server_peak_rss_mb"] > 0
    assert result["server_cpu_s"] is not None and result["server_cpu_s"] >= 0
    assert result["server_exit"] == "signal"
    assert process_gone(result["server_pid"])
    assert no_children_left()


# --- Real runs ---------------------------------------------------------------------
@pytest.mark.parametrize("sender_mode", ["process", "thread"])
def test_tcp_at_low_rate_delivers_everything_once_in_order(sender_mode):
    result = chat_bench.run_benchmark("tcp", clients=4, senders=2, messages=40, rate=200,
                                      sender_mode=sender_mode, deadline=20)
    assert_sane(result)
    assert result["sent"] == 80
    assert result["expected"] == 2 * 40 * 3  # every member gets the other sender's messages
    assert result["received"] == result["expected"]
    assert result["loss_pct"] == 0
    assert (result["duplicates"], result["out_of_order"], result["corrupt"], result["echoes"],
            result["order_mismatch_members"]) == (0, 0, 0, 0, 0)
    assert result["stop_reason"] == "complete"


def test_udp_small_run_reports_figures():
    result = chat_bench.run_benchmark("udp", clients=3, senders=1, messages=30, rate=200,
                                      deadline=20, idle_timeout=1)
    assert_sane(result)
    assert result["corrupt"] == 0 and result["echoes"] == 0
    assert result["stop_reason"] in ("complete", "idle")  # UDP may lose a datagram


def test_naive_baseline_runs_and_forwards_without_echo():
    result = chat_bench.run_benchmark("naive", clients=3, senders=1, messages=300, deadline=20)
    assert_sane(result)
    # One sender: no two threads write to a socket at once, so nothing interleaves.
    assert result["received"] == result["expected"] == 600
    assert result["echoes"] == 0 and result["corrupt"] == 0


def test_ceiling_forwarder_runs():
    result = chat_bench.run_benchmark("ceiling", clients=3, senders=2, messages=200, deadline=20)
    assert_sane(result)
    assert result["received"] == result["expected"]


def test_naive_server_glues_and_splits_and_content_counting_is_right():
    """The naive server forwards raw chunks: one recv() of a receiver holds several
    messages, and a message the sender has only half sent reaches the receiver
    as half a line.  Counting by content still finds every message once."""
    messages = [make_message(0, seq, 0, 64) + b"\n" for seq in range(201)]
    first = b"".join(messages[:100]) + messages[100][:30]  # ends inside message 100
    second = messages[100][30:] + b"".join(messages[101:])
    server = chat_bench.ServerProcess("naive", members=2)
    socks = []
    try:
        deadline = time.monotonic() + 10
        socks, _ = chat_bench.join_members("tcp", server.address, ["a", "b"], [0, 0], deadline)

        def deliver(data):
            socks[0].sendall(data)
            chunks, info = chat_bench.receive(socks[1:], [data.count(b"#")], "tcp",
                                              time.perf_counter_ns() + 10**10, 5 * 10**9,
                                              lambda: True)
            assert info["stop_reason"] == "complete"
            got = chunks[0]  # every "#" is in; bytes after the last one may still come
            missing = len(data) - sum(len(chunk) for _, chunk in got)
            socks[1].settimeout(5)
            while missing > 0:
                chunk = socks[1].recv(missing)
                assert chunk, "connection closed"
                got.append((time.perf_counter_ns(), chunk))
                missing -= len(chunk)
            return got

        part_one = deliver(first)  # all of it arrived: the receiver holds half a line
        part_two = deliver(second)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    data = [chunk for _, chunk in part_one]
    assert b"".join(data) == first
    assert not data[-1].endswith(b"\n"), "the half-sent message should arrive as half a line"
    assert any(chunk.count(b"#") > 1 for chunk in data), "no recv() held several messages"
    assert b"".join(chunk for _, chunk in part_two) == second
    stats = chat_bench.analyse([part_one + part_two], [-1], [b""], 1, 201, 64, 0)
    assert stats["received"] == 201
    assert stats["corrupt"] == stats["duplicates"] == stats["out_of_order"] == 0
    assert server.exit == "signal" and process_gone(server.pid)


def test_naive_server_stalls_on_a_slow_reader_and_the_run_still_ends():
    result = chat_bench.run_benchmark("naive", clients=2, senders=1, slow_readers=1,
                                      messages=100_000, deadline=20, idle_timeout=1)
    assert result["error"] is None
    assert result["stop_reason"] in ("idle", "deadline")
    assert result["received"] < result["expected"]
    assert result["slow_readers_dropped"] == 0
    assert result["server_exit"] in ("signal", "killed")
    assert process_gone(result["server_pid"])
    assert no_children_left()


def test_deadline_ends_a_long_run_and_stops_the_server():
    started = time.monotonic()
    result = chat_bench.run_benchmark("tcp", clients=3, senders=1, messages=1_000_000,
                                      rate=1000, deadline=2)
    assert time.monotonic() - started < 15
    assert result["stop_reason"] == "deadline"
    assert 0 < result["received"] < result["expected"]
    assert result["server_exit"] == "signal"
    assert process_gone(result["server_pid"])
    assert no_children_left()


def test_a_join_past_the_deadline_is_reported_not_raised():
    result = chat_bench.run_benchmark("tcp", clients=2, senders=1, messages=1, deadline=0.001)
    assert result["error"] and result["stop_reason"] == "error"
    assert process_gone(result["server_pid"])


# --- Command line ------------------------------------------------------------------
def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "benchmarks.chat_bench", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_json_prints_one_object_per_run_and_a_summary():
    done = run_cli("--variant", "tcp", "--clients", "3", "--senders", "1", "--messages", "20",
                   "--rate", "500", "--runs", "2", "--json")
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    assert [obj["kind"] for obj in objects] == ["run", "run", "summary"]
    for run in objects[:2]:
        assert run["variant"] == "tcp"
        assert run["received"] == run["expected"] == 40
    assert objects[2]["medians"]["tcp"]["received"] == 40


def test_cli_compare_prints_table_and_ratio():
    done = run_cli("--compare", "tcp,naive", "--clients", "3", "--senders", "1",
                   "--messages", "50")
    assert done.returncode == 0, done.stderr
    assert "tcp/naive" in done.stdout
    assert "доставок в секунду / deliveries/s" in done.stdout


# --- Pieces ------------------------------------------------------------------------
def test_scenarios_resolve_and_explicit_values_win():
    params = chat_bench.resolve_params("slow-reader", messages=10)
    assert (params["clients"], params["senders"], params["slow_readers"]) == (21, 1, 1)
    assert params["messages"] == 10
    assert set(chat_bench.SCENARIOS) == {"fanout", "many-senders", "latency", "slow-reader",
                                         "scale"}
    with pytest.raises(ValueError):
        chat_bench.resolve_params("no-such-scenario")
    with pytest.raises(ValueError):
        chat_bench.run_benchmark("no-such-variant")


def test_message_format_has_the_requested_size():
    message = make_message(3, 17, 123456, 64)
    assert len(message) == 64 and message.count(b"#") == 1
    assert message.startswith(b"#3.17.000000123456 ") and message.endswith(b"=3.17")
    assert len(make_message(3, 17, 123456, 5)) > 5  # never cut below the numbers


def test_analyse_counts_by_content():
    def line(sender, seq, sent_ns=0, prefix=b""):
        return prefix + make_message(sender, seq, sent_ns, 40) + b"\n"

    good = [line(0, 0), line(0, 1), line(1, 0)]
    stream = b"".join(good)
    # one member receives: the stream cut mid-line, a duplicate, an old
    # message after a newer one, a line glued from two messages, a notice
    cut = len(good[0]) + 5
    glued = make_message(0, 5, 0, 40)[:10] + make_message(1, 9, 0, 40)[10:] + b"\n"
    chunks = [[(1_000_000, stream[:cut]), (2_000_000, stream[cut:]),
               (3_000_000, line(0, 1) + line(0, 3) + line(0, 2)),
               (4_000_000, glued + "*** m вошёл в чат\n".encode())]]
    stats = chat_bench.analyse(chunks, [-1], [b"", b""], 2, 10, 40, 0)
    assert stats["received"] == 5  # (0,0) (0,1) (1,0) (0,3) (0,2)
    assert stats["duplicates"] == 1
    assert stats["out_of_order"] == 1
    assert stats["corrupt"] == 1
    assert stats["latencies"][0] == 1.0  # ms: (0, 0) is whole in the first chunk
    assert stats["last_arrival"] == 3_000_000


def test_analyse_checks_prefix_and_echo():
    chunks = [[(5, b"m1: " + make_message(1, 0, 0, 40) + b"\n"
                + b"m0: " + make_message(0, 0, 0, 40) + b"\n"
                + b"zz: " + make_message(1, 1, 0, 40) + b"\n")]]
    stats = chat_bench.analyse(chunks, [0], [b"m0: ", b"m1: "], 2, 5, 40, 0)
    assert stats["received"] == 1  # from m1
    assert stats["echoes"] == 1  # its own message came back
    assert stats["corrupt"] == 1  # wrong name before the message
