"""Where each server design stops: ``python -m benchmarks.scale``.

For each variant (``tcp``: thread per client; ``select``: one thread, an
event loop) and each size N, a fresh server starts; N members join the way
the harness always joins them (:mod:`benchmarks.joining`: they read and drop
the notices of later joins, as chat clients would); then one member sends one
message to all.  Measured: the join time, the time for that broadcast to
reach every other member, the server's RSS before anyone joined and after
the join, RSS per member and the server's thread count.

Every join is announced to everyone already in, so N members cost the server
N·(N−1)/2 notices: the join grows as N², and at some N it no longer fits any
reasonable time.  So each point has a join budget: when it runs out, the
point says how many had joined (status ``"budget"``) and the larger sizes of
that variant are not run (``"skipped"``).  A server that dies, cannot make a
thread or runs out of descriptors gives ``"error"`` with the reason, never a
traceback.  A point lasts at most the server's start, the budget,
``BROADCAST_DEADLINE`` and ``STOP_TIMEOUT`` (then the server is killed).

``run_scale_series(...) -> list[dict]`` for notebooks; each point is a dict
with the keys of :data:`POINT_KEYS`:

* ``variant``, ``members`` (N), ``notices`` (N·(N−1)/2);
* ``status``: ``"ok"``, ``"budget"``, ``"skipped"`` or ``"error"``;
  ``reason``: None for ``"ok"``, else why, in Russian;
* ``joined``: members who joined (all N when ``"ok"``); ``join_s``: first
  connect to last welcome (None unless ``"ok"``);
* ``broadcast_s``: the one message's send to its arrival at the last member;
* ``rss_idle_mb``: server RSS before anyone joined; ``rss_mb``: after the join
  (for ``"budget"``: when the budget ran out); ``rss_per_member_kb``:
  (``rss_mb`` − ``rss_idle_mb``) / ``joined``;
* ``threads``: the server's threads after the join (``/proc/PID/status``,
  else psutil, else None).
"""

import argparse
import json
import os
import sys
import time

from chat_common.cli import make_parser, positive_seconds
from chat_common.text import number
from benchmarks.joining import JoinIncomplete, join_members
from benchmarks.sender import make_message
from benchmarks.server_process import BenchError, ServerProcess, ensure_fd_limit
from benchmarks.table import cell, format_scale_table, point_line, short
from benchmarks.traffic import receive

VARIANTS = ("tcp", "select")
SIZES = (100, 1000, 3000, 10_000)
JOIN_BUDGET = 60.0
BROADCAST_DEADLINE = 10.0  # seconds for the one message to reach everyone
STOP_TIMEOUT = 5.0  # seconds for the server to stop before it is killed
MESSAGE_BYTES = 64

POINT_KEYS = ("variant", "members", "status", "reason", "joined", "join_s", "broadcast_s",
              "rss_idle_mb", "rss_mb", "rss_per_member_kb", "threads", "notices")


def _round(value, digits):
    return None if value is None else round(value, digits)


def run_scale_point(variant, members, join_budget=JOIN_BUDGET):
    """Start ``variant``'s server, join ``members``, broadcast once, stop; a point dict."""
    point = dict.fromkeys(POINT_KEYS)
    point.update(variant=variant, members=members, notices=members * (members - 1) // 2)
    server = None
    socks = []
    try:
        ensure_fd_limit(members)
        server = ServerProcess(variant, members=members)
        point["rss_idle_mb"] = _round(server.rss_mb(), 1)
        names = [f"m{i:05d}" for i in range(members)]
        deadline = time.monotonic() + join_budget
        try:
            socks, join_s = join_members("tcp", server.address, names, [0] * members, deadline,
                                         watch=server.problem, keep_open=True)
        except JoinIncomplete as late:
            socks = late.socks
            point.update(status="budget", joined=late.joined, reason=(
                f"вход не уложился в {short(join_budget)} с: "
                f"вошло {number(late.joined)} из {number(members)}"))
        else:
            point.update(status="ok", joined=members, join_s=round(join_s, 3))
        _measure_server(point, server)
        if point["status"] == "ok":
            point["broadcast_s"] = _broadcast(socks)
    except (BenchError, OSError, ValueError) as error:  # ValueError: select() limit (Windows)
        problem = server.problem() if server is not None else None
        point.update(status="error", reason=problem or str(error))
    finally:
        if server is not None:
            server.stop(STOP_TIMEOUT)  # before the sockets close: no leave notices to send
        for sock in socks:
            sock.close()
    return point


def _measure_server(point, server):
    point["rss_mb"] = _round(server.rss_mb(), 1)
    point["threads"] = server.thread_count()
    if point["rss_mb"] is not None and point["rss_idle_mb"] is not None and point["joined"]:
        grown = (point["rss_mb"] - point["rss_idle_mb"]) * 1024 / point["joined"]
        point["rss_per_member_kb"] = round(grown, 1)


def _broadcast(socks):
    """Seconds for one message of ``socks[0]`` to reach every other member."""
    receivers = socks[1:]
    sent_ns = time.perf_counter_ns()
    socks[0].sendall(make_message(0, 0, 0, MESSAGE_BYTES) + b"\n")
    deadline_ns = sent_ns + int(BROADCAST_DEADLINE * 1e9)
    chunks, _ = receive(receivers, [1] * len(receivers), "tcp", deadline_ns,
                        int(BROADCAST_DEADLINE * 1e9), lambda: True)
    arrivals = [next((at for at, data in got if b"#" in data), None) for got in chunks]
    reached = [at for at in arrivals if at is not None]
    if len(reached) < len(receivers):
        raise BenchError(f"за {short(BROADCAST_DEADLINE)} с сообщение получили не все: "
                         f"{number(len(reached))} из {number(len(receivers))}")
    return round((max(reached, default=sent_ns) - sent_ns) / 1e9, 5)


def run_scale_series(variants=VARIANTS, sizes=SIZES, join_budget=JOIN_BUDGET, on_point=None):
    """Every variant at every size (ascending); a list of point dicts.

    Once a size did not fit ``join_budget`` seconds (or failed), the larger
    sizes of that variant are ``"skipped"``.  ``on_point(point)`` is called
    after each point, skipped ones too (for printing as they come).
    """
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"scale series runs {', '.join(VARIANTS)}, not {variant!r}")
    if any(size < 2 for size in sizes):
        raise ValueError("every size must be at least 2 members")
    points = []
    for variant in variants:
        stopped_at = None  # the point that did not fit
        for size in sorted(sizes):
            if stopped_at is None:
                point = run_scale_point(variant, size, join_budget)
                if point["status"] in ("budget", "error"):
                    stopped_at = point
            else:
                point = dict.fromkeys(POINT_KEYS)
                why = ("не уложились" if stopped_at["status"] == "budget"
                       else "закончились ошибкой")
                point.update(variant=variant, members=size, status="skipped",
                             notices=size * (size - 1) // 2,
                             reason=f"не запускался: уже {number(stopped_at['members'])} {why}")
            points.append(point)
            if on_point is not None:
                on_point(point)
    return points


# --- Command line ----------------------------------------------------------------
def _names(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in VARIANTS]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"варианты через запятую из: {', '.join(VARIANTS)}")
    return names


def _sizes(text):
    try:
        sizes = [int(size) for size in text.replace(" ", "").split(",") if size]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("числа участников через запятую, каждое не меньше 2")
    return sizes


def build_parser():
    """The parser of ``python -m benchmarks.scale`` (help in Russian)."""
    whole, options = make_parser(
        "python -m benchmarks.scale",
        "Серия масштаба: сколько участников выдерживает сервер с потоком на клиента (tcp) и "
        "сервер с циклом событий (select): время входа, одна рассылка всем, память и потоки.")
    options.add_argument("--variants", type=_names, default=list(VARIANTS), metavar="A,B",
                         help=f"какие серверы мерить (по умолчанию {','.join(VARIANTS)})")
    options.add_argument("--sizes", type=_sizes, default=list(SIZES), metavar="N,N",
                         help="числа участников (по умолчанию "
                              f"{','.join(str(size) for size in SIZES)})")
    options.add_argument("--budget", type=positive_seconds, default=JOIN_BUDGET, metavar="С",
                         help="сколько секунд отвести на вход в одной точке; не уложился — "
                              f"большие размеры не запускаются (по умолчанию {JOIN_BUDGET:g})")
    options.add_argument("--json", action="store_true",
                         help="печатать по объекту JSON на точку вместо таблицы")
    return whole


def main(argv=None):
    """Run the series the command line asks for; exit code 1 if a point failed."""
    args = build_parser().parse_args(argv)
    if not args.json:
        load = (f"; загрузка машины {cell(os.getloadavg()[0], 2)}"
                if hasattr(os, "getloadavg") else "")
        print(f"Серия масштаба: {', '.join(args.variants)} × "
              f"{', '.join(number(size) for size in sorted(args.sizes))} участников; "
              f"на вход в каждой точке — не больше {short(args.budget)} с{load}",
              file=sys.stderr, flush=True)

    def show(point):
        if args.json:
            print(json.dumps(point, ensure_ascii=False), flush=True)
        else:
            print(point_line(point), file=sys.stderr, flush=True)

    points = run_scale_series(args.variants, args.sizes, args.budget, on_point=show)
    if not args.json:
        print(format_scale_table(points, args.budget))
    return 1 if any(p["status"] == "error" for p in points) else 0


if __name__ == "__main__":
    sys.exit(main())
