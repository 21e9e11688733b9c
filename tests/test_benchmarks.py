"""The benchmark harness: small real runs of every variant, the scale series,
the CLIs and their Russian text, the content-based counting, deadlines, and
that no server process is left behind.

Every run here is tiny (a few members, tens to hundreds of messages) so each
test takes a few seconds; the figures themselves are not checked, only that
they are present and sane.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import analysis, chat_bench, runner, scale, table
from benchmarks.joining import join_members
from benchmarks.sender import make_message
from benchmarks.server_process import ServerProcess
from benchmarks.traffic import receive

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
    assert set(runner.RESULT_KEYS) == set(result)
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
    result = runner.run_benchmark("tcp", clients=4, senders=2, messages=40, rate=200,
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
    result = runner.run_benchmark("udp", clients=3, senders=1, messages=30, rate=200,
                                  deadline=20, idle_timeout=1)
    assert_sane(result)
    assert result["corrupt"] == 0 and result["echoes"] == 0
    assert result["stop_reason"] in ("complete", "idle")  # UDP may lose a datagram


def test_naive_baseline_runs_and_forwards_without_echo():
    result = runner.run_benchmark("naive", clients=3, senders=1, messages=300, deadline=20)
    assert_sane(result)
    # One sender: no two threads write to a socket at once, so nothing interleaves.
    assert result["received"] == result["expected"] == 600
    assert result["echoes"] == 0 and result["corrupt"] == 0


def test_ceiling_forwarder_runs():
    result = runner.run_benchmark("ceiling", clients=3, senders=2, messages=200, deadline=20)
    assert_sane(result)
    assert result["received"] == result["expected"]


def test_naive_server_glues_and_splits_and_content_counting_is_right():
    """The naive server forwards raw chunks: one recv() of a receiver holds several
    messages, and a message the sender has only half sent reaches the receiver
    as half a line.  Counting by content still finds every message once."""
    messages = [make_message(0, seq, 0, 64) + b"\n" for seq in range(201)]
    first = b"".join(messages[:100]) + messages[100][:30]  # ends inside message 100
    second = messages[100][30:] + b"".join(messages[101:])
    server = ServerProcess("naive", members=2)
    socks = []
    try:
        deadline = time.monotonic() + 10
        socks, _ = join_members("tcp", server.address, ["a", "b"], [0, 0], deadline)

        def deliver(data):
            socks[0].sendall(data)
            chunks, info = receive(socks[1:], [data.count(b"#")], "tcp",
                                   time.perf_counter_ns() + 10**10, 5 * 10**9, lambda: True)
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
    stats = analysis.analyse([part_one + part_two], [-1], [b""], 1, 201, 64, 0)
    assert stats["received"] == 201
    assert stats["corrupt"] == stats["duplicates"] == stats["out_of_order"] == 0
    assert server.exit == "signal" and process_gone(server.pid)


def test_naive_server_stalls_on_a_slow_reader_and_the_run_still_ends():
    result = runner.run_benchmark("naive", clients=2, senders=1, slow_readers=1,
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
    result = runner.run_benchmark("tcp", clients=3, senders=1, messages=1_000_000,
                                  rate=1000, deadline=2)
    assert time.monotonic() - started < 15
    assert result["stop_reason"] == "deadline"
    assert 0 < result["received"] < result["expected"]
    assert result["server_exit"] == "signal"
    assert process_gone(result["server_pid"])
    assert no_children_left()


def test_a_join_past_the_deadline_is_reported_not_raised():
    result = runner.run_benchmark("tcp", clients=2, senders=1, messages=1, deadline=0.001)
    assert result["error"] and result["stop_reason"] == "error"
    assert process_gone(result["server_pid"])


# --- Command line ------------------------------------------------------------------
def run_cli(*args, module="benchmarks.chat_bench", timeout=60):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


LATIN = re.compile(r"[A-Za-z]")
UNITS = re.compile(r"RSS|p\d\d")  # the only Latin a label may keep


def assert_russian_labels(labels):
    for label in labels:
        assert not LATIN.search(UNITS.sub("", label)), label


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


def test_cli_compare_prints_a_russian_table_and_ratio():
    done = run_cli("--compare", "tcp,naive", "--clients", "3", "--senders", "1",
                   "--messages", "2000")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    labels = [label for _, label, _ in table.ROWS]
    assert_russian_labels(labels)
    for label in labels:
        assert any(line.startswith(label + " ") for line in lines), label
    assert re.search(r"^отношение медиан доставок в секунду tcp/naive: \d+,\d\d$",
                     done.stdout, re.MULTILINE)
    # 2 000 messages to 2 members: 4 000 deliveries, thousands apart
    assert re.search(r"^доставок ожидалось +4 000 +4 000$", done.stdout, re.MULTILINE)
    assert re.search(r"^вход всех, с +\d+,\d{3} ", done.stdout, re.MULTILINE)
    assert re.search(r"^причина остановки +всё дошло +всё дошло$", done.stdout, re.MULTILINE)
    assert not re.search(r"\d\.\d", done.stdout), "a decimal point instead of a comma"
    assert "complete" not in done.stdout and " / " not in done.stdout
    assert "tcp: 3 участника, 1 отправитель × 2 000 сообщений по 64 Б" in done.stderr
    assert re.search(r"^прогон 1 · naive: [\d ]+ (доставка|доставки|доставок) в секунду, "
                     r"получено 4 000 из 4 000, p99 \d+,\d\d мс$", done.stderr, re.MULTILINE)


def test_cli_unpaced_udp_explains_its_loss_in_one_line():
    done = run_cli("--variant", "udp", "--clients", "3", "--senders", "1", "--messages", "200")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(table.UDP_UNPACED_NOTE + "\n") == 1
    assert "\n" not in table.UDP_UNPACED_NOTE and "--rate" in table.UDP_UNPACED_NOTE
    as_json = run_cli("--variant", "udp", "--clients", "3", "--senders", "1", "--messages",
                      "200", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line)["kind"] for line in as_json.stdout.splitlines()] == ["run"]
    assert as_json.stderr.count(table.UDP_UNPACED_NOTE) == 1  # stdout stays JSON


def test_the_note_is_only_for_unpaced_udp():
    params = runner.resolve_params()
    assert table.udp_unpaced_note(["tcp", "udp"], params) == table.UDP_UNPACED_NOTE
    assert table.udp_unpaced_note(["tcp", "select"], params) is None
    assert table.udp_unpaced_note(["udp"], runner.resolve_params("latency")) is None


@pytest.mark.parametrize("module", ["benchmarks.chat_bench", "benchmarks.scale"])
def test_help_is_russian(module):
    done = run_cli("--help", module=module)
    assert done.returncode == 0, done.stderr
    for english in ("usage:", "options:", "show this help"):
        assert english not in done.stdout
    assert "Запуск:" in done.stdout and "--json" in done.stdout


def test_old_imports_from_chat_bench_still_work():
    # notebooks/03_timing.ipynb and older scripts import these from chat_bench
    for name in ("RESULT_KEYS", "SCENARIOS", "DEFAULTS", "VARIANTS", "BenchError",
                 "ServerProcess", "Sender", "analyse", "percentile", "join_members", "receive",
                 "resolve_params", "run_benchmark", "run_series", "summarise", "format_table",
                 "describe", "build_parser", "main"):
        assert hasattr(chat_bench, name), name
        assert name in chat_bench.__all__, name
    assert chat_bench.run_benchmark is runner.run_benchmark
    assert {"tcp", "select", "udp", "naive", "ceiling"} == set(chat_bench.VARIANTS)


# --- Pieces ------------------------------------------------------------------------
def test_scenarios_resolve_and_explicit_values_win():
    params = runner.resolve_params("slow-reader", messages=10)
    assert (params["clients"], params["senders"], params["slow_readers"]) == (21, 1, 1)
    assert params["messages"] == 10
    assert set(runner.SCENARIOS) == {"fanout", "many-senders", "latency", "slow-reader",
                                         "scale"}
    with pytest.raises(ValueError):
        runner.resolve_params("no-such-scenario")
    with pytest.raises(ValueError):
        runner.run_benchmark("no-such-variant")


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
    stats = analysis.analyse(chunks, [-1], [b"", b""], 2, 10, 40, 0)
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
    stats = analysis.analyse(chunks, [0], [b"m0: ", b"m1: "], 2, 5, 40, 0)
    assert stats["received"] == 1  # from m1
    assert stats["echoes"] == 1  # its own message came back
    assert stats["corrupt"] == 1  # wrong name before the message


# --- The scale series --------------------------------------------------------------
def test_scale_series_at_small_sizes_measures_both_designs():
    seen = []
    points = scale.run_scale_series(("tcp", "select"), (5, 20), join_budget=30,
                                    on_point=seen.append)
    assert seen == points
    assert [(p["variant"], p["members"]) for p in points] == [
        ("tcp", 5), ("tcp", 20), ("select", 5), ("select", 20)]
    for p in points:
        assert tuple(p) == scale.POINT_KEYS
        assert (p["status"], p["reason"]) == ("ok", None), p
        assert p["joined"] == p["members"]
        assert p["notices"] == p["members"] * (p["members"] - 1) // 2
        assert p["join_s"] >= 0 and p["broadcast_s"] >= 0
        assert 0 < p["rss_idle_mb"] and 0 < p["rss_mb"]
        assert p["rss_per_member_kb"] is not None
    if points[0]["threads"] is None:
        pytest.skip("no /proc and no psutil: thread counts unknown here")
    tcp = [p["threads"] for p in points if p["variant"] == "tcp"]
    select = [p["threads"] for p in points if p["variant"] == "select"]
    assert tcp[0] > 5 and tcp[1] > 20  # two threads per member
    assert tcp[1] - tcp[0] >= 2 * 15
    assert select[0] == select[1] <= 4  # one loop, whatever the members
    assert no_children_left()


def test_scale_budget_stops_a_point_and_skips_larger_sizes():
    points = scale.run_scale_series(("tcp",), (200, 400), join_budget=0.05)
    late, skipped = points
    assert late["status"] == "budget"
    assert 0 <= late["joined"] < 200
    assert re.fullmatch(r"вход не уложился в 0,05 с: вошло \d+ из 200", late["reason"])
    assert late["join_s"] is None and late["broadcast_s"] is None
    assert late["threads"] is None or late["threads"] >= 2
    assert skipped["status"] == "skipped" and skipped["members"] == 400
    assert skipped["reason"] == "не запускался: уже 200 не уложились"
    assert skipped["joined"] is None and skipped["notices"] == 400 * 399 // 2
    assert no_children_left()


class DyingServer(ServerProcess):
    """A server that dies as soon as it has started (as if killed by the OOM killer)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.proc.kill()
        self.proc.wait()


def test_a_dying_server_is_an_error_with_a_reason_not_a_traceback(monkeypatch):
    monkeypatch.setattr(scale, "ServerProcess", DyingServer)
    points = scale.run_scale_series(("select",), (10, 30), join_budget=10)
    assert points[0]["status"] == "error"
    assert points[0]["reason"].startswith("сервер завершился (код")
    assert points[1]["status"] == "skipped"
    assert points[1]["reason"] == "не запускался: уже 10 закончились ошибкой"
    assert no_children_left()


def test_scale_table_is_russian():
    points = [
        dict(variant="tcp", members=1000, status="ok", reason=None, joined=1000, join_s=43.2179,
             broadcast_s=0.0853, rss_idle_mb=16.8, rss_mb=59.8, rss_per_member_kb=44.0,
             threads=2002, notices=499500),
        dict(variant="tcp", members=3000, status="budget", joined=2310, join_s=None,
             reason="вход не уложился в 60 с: вошло 2 310 из 3 000", broadcast_s=None,
             rss_idle_mb=16.8, rss_mb=130.5, rss_per_member_kb=50.4, threads=4622,
             notices=4498500),
        dict(variant="select", members=1000, status="ok", reason=None, joined=1000, join_s=4.8,
             broadcast_s=0.033, rss_idle_mb=16.9, rss_mb=19.4, rss_per_member_kb=2.6, threads=2, notices=499500),
        dict(variant="select", members=3000, status="skipped", joined=None, join_s=None,
             reason="не запускался: уже 3 000 не уложились", broadcast_s=None,
             rss_idle_mb=None, rss_mb=None, rss_per_member_kb=None, threads=None,
             notices=4498500),
    ]
    text = table.format_scale_table(points, 60)
    lines = text.splitlines()
    assert lines[0].split() == ["участников", "tcp", "select"]
    labels = [label for _, label, _ in table.BLOCKS]
    assert_russian_labels(labels)
    assert all(label in lines for label in labels)
    assert re.search(r"^  1 000 +43,22 +4,80$", text, re.MULTILINE)  # join, s
    assert re.search(r"^  3 000 +> 60 +—$", text, re.MULTILINE)
    assert re.search(r"^  1 000 +85,3 +33,0$", text, re.MULTILINE)  # broadcast, ms
    assert re.search(r"^  3 000 +4 622 +—$", text, re.MULTILINE)  # threads
    assert re.search(r"^  3 000 +не уложился +пропущен$", text, re.MULTILINE)
    assert "1 000 — 499 500; 3 000 — 4 498 500" in text
    assert "tcp, 3 000 участников: вход не уложился в 60 с: вошло 2 310 из 3 000" in lines
    assert "select, 3 000 участников: не запускался: уже 3 000 не уложились" in lines
    assert not re.search(r"\d\.\d", text)
    assert table.point_line(points[0]) == (
        "tcp, 1 000 участников: вход 43,22 с, рассылка 85,3 мс, RSS 59,8 МБ, 2 002 потока")


def test_scale_cli_prints_a_table_or_json():
    done = run_cli("--variants", "select", "--sizes", "3,4", "--budget", "20",
                   module="benchmarks.scale")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == ["участников", "select"]
    assert "select, 3 участника: вход" in done.stderr
    assert "select, 4 участника: вход" in done.stderr
    as_json = run_cli("--variants", "tcp", "--sizes", "2", "--json", module="benchmarks.scale")
    assert as_json.returncode == 0, as_json.stderr
    (point,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert point["status"] == "ok" and point["members"] == 2 and point["notices"] == 1
    wrong = run_cli("--sizes", "1", module="benchmarks.scale")
    assert wrong.returncode == 2
    assert "не меньше 2" in wrong.stderr and "Traceback" not in wrong.stderr
