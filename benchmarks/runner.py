"""One run of the benchmark and series of runs: ``run_benchmark`` and ``run_series``.

How one run goes: the server starts in its own process
(:mod:`benchmarks.server_process`); ``clients`` members join, ``window``
handshakes at a time, then ``slow_readers`` more who never read again
(:mod:`benchmarks.joining`); the first ``senders`` members send while one
loop receives on every fast member's socket (:mod:`benchmarks.traffic`); the
run stops when every receiver has everything, or nothing new arrived for
``idle_timeout`` seconds, or at ``deadline``; the server's CPU time and peak
RSS are read, the server is stopped (always: also in a ``finally`` block),
and the arrivals are parsed by content (:mod:`benchmarks.analysis`).

``run_benchmark(variant="tcp", *, scenario=None, clients=..., ...) -> dict``
runs once and returns a dict with the keys below (stable: notebooks rely on
them).  ``scenario`` fills in the workload of :data:`SCENARIOS`; explicit
arguments override it.  ``run_series(variants, runs, **kwargs)`` runs
variants interleaved and returns ``{"runs": [...], "summary": {...}}``.

Result keys
-----------
Workload: ``kind`` ("run"), ``variant``, ``scenario`` (str or None),
``run`` (index, from 1), ``clients``, ``senders``, ``messages``, ``size``,
``rate``, ``slow_readers``, ``sender_mode``, ``batch``, ``load_1min`` (the
machine's load average as the run began, None where unknown: other work on
the machine distorts every figure).

Outcome (ints unless noted; None when the run did not get that far):

* ``joined``: members that joined (slow readers included); ``join_s``
  (float): first connect to last welcome.
* ``sent``: messages the senders handed to the socket.
* ``expected``: deliveries planned: every fast member gets every message of
  every *other* sender; ``received``: distinct valid messages that arrived;
  ``lost`` = expected - received; ``loss_pct`` (float).
* ``duplicates``: a message arriving again at the same member;
  ``out_of_order``: a message whose sequence number is below one already
  received from the same sender by the same member; ``corrupt``: lines with a
  ``#`` that are not exactly a message as sent (glued, cut, interleaved,
  wrong ``NAME:`` prefix) -- not counted as received; ``echoes``: a sender's
  own message returned to it (not counted).
* ``order_mismatch_members``: members (with several senders) whose order of
  messages differs from that of a reference member.
* ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``,
  ``latency_max_ms`` (floats): send to arrival over all deliveries;
  ``latency_p99_worst_member_ms``: the highest per-member p99.
* ``deliveries_per_s`` (float): received / ``window_s``; ``window_s``: first
  send to last arrival; ``send_s``: first to last send.
* ``server_peak_rss_mb`` (float): peak resident memory of the server process
  (VmHWM on Linux); ``server_cpu_s``: its CPU seconds during the window
  (per-thread ns counters on Linux, else clock ticks); ``server_cpu_total_s``:
  user + system since it started (clock ticks, 10 ms resolution).
* ``harness_cpu_s``: CPU seconds of the harness during the window (receiver
  process plus sender process).
* ``members_disconnected``: fast members whose connection the server closed;
  ``slow_readers_dropped``: slow readers the server disconnected.
* ``stop_reason``: ``"complete"``, ``"idle"`` (nothing new for
  ``idle_timeout``: loss, or a stalled server), ``"deadline"`` or ``"error"``;
  ``stalled`` (bool): idle with the senders still blocked, or (TCP, which
  loses nothing) with deliveries missing: the server stopped forwarding.
  ``deliveries_per_s`` of a stalled run covers only what arrived before.
* ``server_pid``: the server's process id; ``server_exit``: how it ended
  (``"signal"``: stopped by SIGINT/SIGTERM in time, ``"killed"``, or
  ``"exited (CODE)"`` if it had ended by itself).
* ``error``: None, or text when the run failed (for example a join refused).

``run_series`` and the CLI's ``--json`` add one ``{"kind": "summary", ...}``
object with per-variant medians and the ratios of medians of
``deliveries_per_s``.
"""

import os
import time

from benchmarks.analysis import analyse, fill_result, round_or_none, summarise
from benchmarks.joining import SLOW_RCVBUF, UDP_RCVBUF, close_abruptly, drain_check, join_members
from benchmarks.sender import CPU_US, FIRST_NS, LAST_NS, SENT
from benchmarks.server_process import VARIANTS, BenchError, ServerProcess, ensure_fd_limit
from benchmarks.traffic import Sender, receive

SCENARIOS = {
    "fanout": dict(clients=21, senders=1, messages=5000, size=64, rate=0.0),
    "many-senders": dict(clients=100, senders=10, messages=1000, size=64, rate=0.0),
    "latency": dict(clients=100, senders=5, messages=50, size=64, rate=10.0),
    "slow-reader": dict(clients=21, senders=1, messages=100_000, size=64, rate=0.0,
                        slow_readers=1),
    "scale": dict(clients=1000, senders=1, messages=1, size=64, rate=0.0, deadline=120.0),
}
"""Ready workloads (benchmarks/README.md says what each shows).  ``fanout``:
20 receivers and one sender, unpaced; ``many-senders``: 100 members, 10 of
them send; ``latency``: 100 members, 5 senders at 10 messages/s each (50/s in
total); ``slow-reader``: ``fanout`` plus one member that never reads, 100 000
messages; ``scale``: 1000 members, one broadcast (the series of sizes is
:mod:`benchmarks.scale`)."""

DEFAULTS = dict(clients=10, senders=2, messages=1000, size=64, rate=0.0, slow_readers=0,
                deadline=30.0, idle_timeout=2.0, window=64, sender_mode="process",
                rcvbuf=None, batch=16)

RESULT_KEYS = (
    "kind", "variant", "scenario", "run", "clients", "senders", "messages", "size", "rate",
    "slow_readers", "sender_mode", "batch", "load_1min", "joined", "join_s", "sent", "expected",
    "received", "lost", "loss_pct", "duplicates", "out_of_order", "corrupt", "echoes",
    "order_mismatch_members", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "latency_max_ms", "latency_p99_worst_member_ms", "deliveries_per_s", "window_s", "send_s",
    "server_peak_rss_mb", "server_cpu_s", "server_cpu_total_s", "harness_cpu_s",
    "members_disconnected", "slow_readers_dropped", "stop_reason", "stalled", "server_pid",
    "server_exit", "error",
)


def resolve_params(scenario=None, **given):
    """Workload parameters: DEFAULTS, then the scenario's, then ``given`` (not None)."""
    params = dict(DEFAULTS)
    if scenario is not None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        params.update(SCENARIOS[scenario])
    params.update({key: value for key, value in given.items() if value is not None})
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameters: {', '.join(sorted(unknown))}")
    return params


def run_benchmark(variant="tcp", *, scenario=None, run=1, clients=None, senders=None,
                  messages=None, size=None, rate=None, slow_readers=None, deadline=None,
                  idle_timeout=None, window=None, sender_mode=None, rcvbuf=None, batch=None):
    """Start ``variant``'s server, run one workload, stop it; return a result dict.

    See the module docstring for the parameters and the result keys.  Never
    raises for a failed run (the result has ``error``); raises ``ValueError``
    or ``TypeError`` for bad arguments.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    p = resolve_params(scenario, clients=clients, senders=senders, messages=messages, size=size,
                       rate=rate, slow_readers=slow_readers, deadline=deadline,
                       idle_timeout=idle_timeout, window=window, sender_mode=sender_mode,
                       rcvbuf=rcvbuf, batch=batch)
    if variant == "ceiling":
        p["slow_readers"] = 0  # the trivial forwarder would stall on them by design
    if not 1 <= p["senders"] <= p["clients"]:
        raise ValueError("need 1 <= senders <= clients")
    result = dict.fromkeys(RESULT_KEYS)
    result.update(kind="run", variant=variant, scenario=scenario, run=run,
                  **{key: p[key] for key in ("clients", "senders", "messages", "size", "rate",
                                             "slow_readers", "sender_mode", "batch")})
    if hasattr(os, "getloadavg"):
        result["load_1min"] = round(os.getloadavg()[0], 2)
    transport = VARIANTS[variant][1]
    total = p["clients"] + p["slow_readers"]
    started = time.monotonic()
    deadline_at = started + p["deadline"]
    server = sender = None
    socks = []
    try:
        ensure_fd_limit(total)
        server = ServerProcess(variant, members=total)
        result["server_pid"] = server.pid
        names = [f"m{i:04d}" for i in range(total)]
        rcvbuf = p["rcvbuf"] if p["rcvbuf"] is not None else (UDP_RCVBUF if transport == "udp" else 0)
        rcvbufs = [rcvbuf] * p["clients"] + [SLOW_RCVBUF] * p["slow_readers"]
        socks, join_s = join_members(transport, server.address, names, rcvbufs,
                                      deadline_at, p["window"], readers=p["clients"])
        result["join_s"] = round(join_s, 4)
        result["joined"] = len(socks)
        fast, slow = socks[:p["clients"]], socks[p["clients"]:]
        k, m = p["senders"], p["messages"]
        expected = [k * m - (m if i < k else 0) for i in range(p["clients"])]
        result["expected"] = sum(expected)
        base_ns = time.perf_counter_ns()
        sender = Sender(p["sender_mode"], fast[:k], list(range(k)), m, p["size"], p["rate"],
                        transport, base_ns, p["batch"])
        idle = p["idle_timeout"] if p["rate"] <= 0 else max(p["idle_timeout"], 3 / p["rate"])
        cpu_start = server.cpu_seconds()
        precise_start = server.cpu_seconds_precise()
        harness_cpu0 = time.process_time()
        start_ns = time.perf_counter_ns() + 20_000_000  # the receiving loop is running by then
        sender.start(start_ns)
        deadline_ns = time.perf_counter_ns() + int(max(deadline_at - time.monotonic(), 0) * 1e9)
        chunks, info = receive(fast, expected, transport, deadline_ns, int(idle * 1e9),
                               sender.done)
        precise_end = server.cpu_seconds_precise()
        cpu_end = server.cpu_seconds()
        harness_cpu = time.process_time() - harness_cpu0
        result["server_peak_rss_mb"] = round_or_none(server.peak_rss_mb(), 1)
        result["server_cpu_total_s"] = round_or_none(cpu_end, 3)
        result["server_cpu_s"] = _cpu_delta(cpu_start, cpu_end, precise_start, precise_end)
        sender.stop()
        progress = list(sender.progress)
        if p["sender_mode"] == "process":
            harness_cpu += progress[CPU_US] / 1e6
        result["harness_cpu_s"] = round(harness_cpu, 3)
        result["sent"] = progress[SENT]
        first_send = progress[FIRST_NS]
        if progress[LAST_NS]:
            result["send_s"] = round((progress[LAST_NS] - first_send) / 1e9, 4)
        if slow:
            result["slow_readers_dropped"] = sum(drain_check(sock) for sock in slow)
        _stop_server(server, slow, result)  # before the analysis: free its CPU now
        prefixes = [b"" if variant in ("naive", "ceiling") else names[s].encode() + b": "
                    for s in range(k)]
        own_ids = [i if i < k else -1 for i in range(p["clients"])]
        stats = analyse(chunks, own_ids, prefixes, k, m, p["size"], base_ns)
        del chunks
        fill_result(result, stats, first_send, base_ns)
        result["stop_reason"] = info["stop_reason"]
        # TCP loses nothing: what is missing when arrivals stopped is stuck somewhere.
        result["stalled"] = info["stop_reason"] == "idle" and (
            info["stalled"] or (transport == "tcp" and result["lost"] > 0))
        result["members_disconnected"] = info["disconnected"]
    except BenchError as error:
        result["error"] = str(error)
        result["stop_reason"] = "error"
    finally:
        if sender is not None:
            sender.stop()
        if server is not None:
            _stop_server(server, socks[p["clients"]:], result)
        for sock in socks:
            sock.close()
    return result


def _stop_server(server, slow, result):
    """Reset the slow readers' connections, then stop the server (idempotent)."""
    for sock in slow:
        close_abruptly(sock)
    server.stop()
    result["server_exit"] = server.exit


def _cpu_delta(start, end, precise_start, precise_end):
    """CPU seconds over the window: per-thread ns counters where they exist,
    unless the tick counters (which keep ended threads) show clearly more."""
    coarse = None if start is None or end is None else end - start
    if precise_start is None or precise_end is None:
        return round_or_none(coarse, 3)
    precise = precise_end - precise_start
    if coarse is not None and coarse > precise + 0.02:
        return round(coarse, 3)
    return round(precise, 4)


def run_series(variants, runs=1, *, scenario=None, on_result=None, **kwargs):
    """Run each variant ``runs`` times, interleaved (tcp, naive, tcp, naive, ...).

    ``on_result(result)`` is called after every run (for printing as they
    come).  Returns ``{"runs": [result, ...], "summary": summary}``; see
    :func:`summarise`.
    """
    results = []
    for index in range(1, runs + 1):
        for variant in variants:
            result = run_benchmark(variant, scenario=scenario, run=index, **kwargs)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return {"runs": results, "summary": summarise(results, variants)}
