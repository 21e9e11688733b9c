"""The benchmark's command line: ``python -m benchmarks.chat_bench``.

Not chat code: the harness may use ``selectors``, several processes and
whatever makes it fast, because it must never be the bottleneck it measures.
Its parts, one job each:

======================================  ==========================================
:mod:`benchmarks.server_process`        the server under test in its own process
:mod:`benchmarks.joining`               members join as chat clients would
:mod:`benchmarks.traffic`               sending and receiving the messages
:mod:`benchmarks.analysis`              arrivals parsed by content, counted, summarised
:mod:`benchmarks.runner`                one run, series of runs, scenarios, result keys
:mod:`benchmarks.table`                 what is printed for a person, in Russian
:mod:`benchmarks.scale`                 the series of sizes: where each server design stops
======================================  ==========================================

This module keeps the names older code imports from it (``from
benchmarks.chat_bench import run_benchmark, VARIANTS``, ...).  See also
``benchmarks/README.md``.
"""

import argparse
import json
import math
import sys

from chat_common.cli import make_parser, positive_int, positive_seconds
from benchmarks.analysis import analyse, percentile, summarise
from benchmarks.joining import SLOW_RCVBUF, UDP_JOIN_RETRY, UDP_RCVBUF, JoinIncomplete, join_members
from benchmarks.runner import DEFAULTS, RESULT_KEYS, SCENARIOS, resolve_params, run_benchmark, \
    run_series
from benchmarks.server_process import ROOT, START_TIMEOUT, STOP_TIMEOUT, UDP_CLIENT_TIMEOUT, \
    VARIANTS, BenchError, ServerProcess
from benchmarks.table import describe, format_table, progress_line, ratio_line, udp_unpaced_note
from benchmarks.traffic import RECV_BYTES, Sender, receive

__all__ = [  # re-exported for code that imported them from here before the split
    "analyse", "percentile", "summarise", "SLOW_RCVBUF", "UDP_JOIN_RETRY", "UDP_RCVBUF",
    "JoinIncomplete", "join_members", "DEFAULTS", "RESULT_KEYS", "SCENARIOS", "resolve_params",
    "run_benchmark", "run_series", "ROOT", "START_TIMEOUT", "STOP_TIMEOUT", "UDP_CLIENT_TIMEOUT",
    "VARIANTS", "BenchError", "ServerProcess", "describe", "format_table", "RECV_BYTES",
    "Sender", "receive", "build_parser", "main",
]


def _at_least_zero(kind):
    """argparse type: a number of ``kind`` (int or float), 0 or more."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"не число: {text!r}") from None
        if not (value >= 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"нужно число не меньше нуля, а не {text}")
        return value
    return convert


def build_parser():
    """The parser of ``python -m benchmarks.chat_bench`` (help in Russian)."""
    whole, parser = make_parser(  # options go into the group "параметры"
        "python -m benchmarks.chat_bench",
        "Нагрузочный стенд чата: запускает сервер в отдельном процессе, "
        "подключает участников, меряет доставку, задержки и ресурсы.")
    parser.add_argument("--variant", choices=list(VARIANTS), default="tcp",
                        help="какой сервер мерить (по умолчанию tcp; select — сервер с циклом "
                             "событий); ceiling — простейший пересыльщик, потолок самого стенда")
    parser.add_argument("--scenario", choices=list(SCENARIOS),
                        help="готовая нагрузка (см. benchmarks/README.md); явные параметры её уточняют")
    parser.add_argument("--clients", type=positive_int, metavar="N",
                        help=f"участников (по умолчанию {DEFAULTS['clients']})")
    parser.add_argument("--senders", type=positive_int, metavar="K",
                        help=f"сколько из них отправляют (по умолчанию {DEFAULTS['senders']})")
    parser.add_argument("--messages", type=positive_int, metavar="M",
                        help=f"сообщений от каждого отправителя (по умолчанию {DEFAULTS['messages']})")
    parser.add_argument("--size", type=positive_int, metavar="B",
                        help=f"байт в сообщении (по умолчанию {DEFAULTS['size']})")
    parser.add_argument("--rate", type=_at_least_zero(float), metavar="R",
                        help="сообщений в секунду от каждого; 0 — как можно быстрее (по умолчанию)")
    parser.add_argument("--slow-readers", type=_at_least_zero(int), metavar="S",
                        help="ещё участники, которые входят и никогда не читают (по умолчанию 0)")
    parser.add_argument("--runs", type=positive_int, default=1, metavar="N",
                        help="повторить N раз; в конце — медианы")
    parser.add_argument("--compare", metavar="A,B",
                        help="сравнить варианты через запятую (прогоны чередуются); "
                             "печатается отношение медиан доставок в секунду к последнему")
    parser.add_argument("--ceiling", action="store_true",
                        help="прогнать ту же нагрузку и через пересыльщик ceiling и "
                             "напечатать потолок стенда рядом")
    parser.add_argument("--deadline", type=positive_seconds, metavar="С",
                        help=f"предел одного прогона в секундах (по умолчанию {DEFAULTS['deadline']:g})")
    parser.add_argument("--idle-timeout", type=positive_seconds, metavar="С",
                        help="остановиться, если столько секунд ничего не приходит "
                             f"(по умолчанию {DEFAULTS['idle_timeout']:g})")
    parser.add_argument("--window", type=positive_int, metavar="W",
                        help=f"одновременных входов (по умолчанию {DEFAULTS['window']})")
    parser.add_argument("--sender-mode", choices=("process", "thread"),
                        help="отправители в отдельном процессе (по умолчанию) или в потоке")
    parser.add_argument("--batch", type=positive_int, metavar="N",
                        help="без темпа и по TCP: отправлять по N сообщений одним sendall "
                             "(у всех — время этой записи; по умолчанию 16; 1 — одна "
                             "запись на сообщение, как у клиента чата, но тогда потолок "
                             "задаёт сам отправитель)")
    parser.add_argument("--rcvbuf", type=positive_int, metavar="БАЙТ",
                        help="SO_RCVBUF быстрых участников (по умолчанию: TCP — автонастройка, "
                             f"UDP — {UDP_RCVBUF >> 20} МиБ)")
    parser.add_argument("--json", action="store_true",
                        help="печатать по объекту JSON на прогон (и сводку при нескольких)")
    return whole


def main(argv=None):
    """Run what the command line asks; return the exit code (1 if a run failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    variants = args.compare.split(",") if args.compare else [args.variant]
    variants = [v.strip() for v in variants if v.strip()]
    for variant in variants:
        if variant not in VARIANTS:
            parser.error(f"неизвестный вариант {variant!r}; есть: {', '.join(VARIANTS)}")
    if args.ceiling and "ceiling" not in variants:
        variants.append("ceiling")
    kwargs = dict(clients=args.clients, senders=args.senders, messages=args.messages,
                  size=args.size, rate=args.rate, slow_readers=args.slow_readers,
                  deadline=args.deadline, idle_timeout=args.idle_timeout, window=args.window,
                  sender_mode=args.sender_mode, rcvbuf=args.rcvbuf, batch=args.batch)
    params = resolve_params(args.scenario, **kwargs)
    if not 1 <= params["senders"] <= params["clients"]:
        parser.error("отправителей должно быть от 1 до числа участников")

    def show(result):
        if args.json:
            print(json.dumps(result, ensure_ascii=False), flush=True)
        else:
            print(progress_line(result), file=sys.stderr, flush=True)

    if not args.json:
        for variant in variants:
            print(describe(params, variant, args.scenario), file=sys.stderr)
    series = run_series(variants, args.runs, scenario=args.scenario, on_result=show, **kwargs)
    summary = series["summary"]
    note = udp_unpaced_note(variants, params)
    if args.json:
        if len(series["runs"]) > 1:
            print(json.dumps(summary, ensure_ascii=False), flush=True)
        if note:
            print(note, file=sys.stderr)  # stdout stays pure JSON
        return 1 if any(r["error"] for r in series["runs"]) else 0
    if len(variants) == 1:
        columns = [(f"прогон {r['run']}", r) for r in series["runs"]]
        if args.runs > 1:
            columns.append(("медиана", summary["medians"][variants[0]]))
    else:
        columns = [(f"{v} (медиана)" if args.runs > 1 else v, summary["medians"][v])
                   for v in variants]
    print(format_table(columns))
    for name, ratio in summary["ratios"].items():
        print(ratio_line(name, ratio))
    if note:
        print(note)
    for r in series["runs"]:
        if r["error"]:
            print(f"ошибка прогона {r['run']} ({r['variant']}): {r['error']}")
    return 1 if any(r["error"] for r in series["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
