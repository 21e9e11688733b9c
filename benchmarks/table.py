"""What the benchmark prints for a person: tables and lines in Russian.

Numbers are written the Russian way (``5 257 152``, ``0,46``) and counts
agree with their nouns (``1 участник``, ``2 участника``, ``5 участников``)
through :mod:`chat_common.text`.  Only people read this text; the ``--json``
output keeps the machine-readable keys and values (``"stop_reason":
"complete"``).
"""

from chat_common.text import number, plural

STOP_REASONS = {
    "complete": "всё дошло",
    "idle": "тишина",
    "deadline": "истёк срок",
    "error": "ошибка",
}
"""``stop_reason`` of a run as the table shows it: everyone got everything;
nothing new arrived for ``--idle-timeout`` (loss, or a stalled server); the
run's ``--deadline`` passed; the run failed."""

ROWS = (  # (result key, label, digits after the comma; None: a whole number)
    ("joined", "участников вошло", None),
    ("join_s", "вход всех, с", 3),
    ("sent", "отправлено сообщений", None),
    ("expected", "доставок ожидалось", None),
    ("received", "доставок получено", None),
    ("loss_pct", "потеряно, %", 2),
    ("duplicates", "повторов", None),
    ("out_of_order", "не по порядку", None),
    ("corrupt", "испорченных строк", None),
    ("echoes", "вернулось отправителю", None),
    ("order_mismatch_members", "участников с иным порядком", None),
    ("latency_p50_ms", "задержка p50, мс", 2),
    ("latency_p95_ms", "задержка p95, мс", 2),
    ("latency_p99_ms", "задержка p99, мс", 2),
    ("latency_max_ms", "задержка наибольшая, мс", 2),
    ("latency_p99_worst_member_ms", "худший p99 участника, мс", 2),
    ("deliveries_per_s", "доставок в секунду", 0),
    ("window_s", "окно от отправки до прихода, с", 3),
    ("send_s", "отправка всех сообщений, с", 3),
    ("server_peak_rss_mb", "пик RSS сервера, МБ", 1),
    ("server_cpu_s", "ЦП сервера за окно, с", 3),
    ("harness_cpu_s", "ЦП стенда за окно, с", 3),
    ("members_disconnected", "отключено сервером", None),
    ("slow_readers_dropped", "медленных отключено", None),
    ("stop_reason", "причина остановки", "reason"),
)

UDP_UNPACED_NOTE = (
    "Потери UDP без темпа ожидаемы: отправители шлют быстрее, чем сервер и участники "
    "успевают читать, приёмные буферы переполняются, а управления потоком у UDP нет — лишние "
    "датаграммы ядро выбрасывает. Осмысленную долю потерь даёт прогон с темпом: --rate 1000 "
    "(сообщений в секунду от каждого отправителя), затем выше, пока потери не появятся.")
"""Printed once after any unpaced UDP run (one line)."""


def short(value):
    """A number as short as it goes: ``60``, ``0,05``, ``10 000``."""
    if float(value).is_integer():
        return number(int(value))
    return f"{value:g}".replace(".", ",")


def cell(value, digits=None):
    """One figure of a table: ``—`` for None, else a whole number
    (``digits=None``) or one with ``digits`` decimals."""
    if value is None:
        return "—"
    if digits is None:
        if isinstance(value, float) and not value.is_integer():
            return number(value, 1)  # a median of two whole numbers
        return number(int(value))
    return number(value, digits)


def _row_cell(data, key, digits):
    value = data.get(key)
    if digits != "reason":
        return cell(value, digits)
    if value is None:
        return "—"
    text = STOP_REASONS.get(value, value)
    return text + ", сервер встал" if data.get("stalled") else text


def format_table(columns):
    """``columns``: list of ``(title, result or medians dict)``; the table as text."""
    width = max(len(label) for _, label, _ in ROWS)
    cells = [[_row_cell(data, key, digits) for key, _, digits in ROWS] for _, data in columns]
    widths = [max(len(title), *(len(c) for c in col)) for (title, _), col in zip(columns, cells)]
    lines = [" " * width + "  " + "  ".join(t.rjust(w) for (t, _), w in zip(columns, widths))]
    for row, (_, label, _) in enumerate(ROWS):
        lines.append(label.ljust(width) + "  " + "  ".join(
            col[row].rjust(w) for col, w in zip(cells, widths)))
    return "\n".join(lines)


def describe(p, variant, scenario):
    """One line saying what a run does (``p``: its resolved parameters)."""
    if not p["rate"]:
        rate = "без ограничения"
    elif float(p["rate"]).is_integer():
        rate = plural(int(p["rate"]), "сообщение", "сообщения", "сообщений")
        rate += " в секунду от каждого"
    else:
        rate = f"{short(p['rate'])} сообщения в секунду от каждого"
    text = (f"{variant}: {_members(p['clients'])}, "
            f"{plural(p['senders'], 'отправитель', 'отправителя', 'отправителей')} × "
            f"{plural(p['messages'], 'сообщение', 'сообщения', 'сообщений')} "
            f"по {number(p['size'])} Б, темп: {rate}")
    if p["slow_readers"]:
        text += f", медленных читателей: {number(p['slow_readers'])}"
    if scenario:
        text = f"[{scenario}] " + text
    return text


def progress_line(result):
    """One line about a finished run, printed as the runs go."""
    speed = result["deliveries_per_s"]
    speed = ("доставок в секунду: —" if speed is None else
             plural(round(speed), "доставка", "доставки", "доставок") + " в секунду")
    line = (f"прогон {result['run']} · {result['variant']}: {speed}, "
            f"получено {cell(result['received'])} из {cell(result['expected'])}, "
            f"p99 {cell(result['latency_p99_ms'], 2)} мс")
    if result["error"]:
        line += f"; ошибка: {result['error']}"
    return line


def ratio_line(name, ratio):
    """``name``: ``"A/B"`` of :func:`benchmarks.analysis.summarise`'s ratios."""
    return f"отношение медиан доставок в секунду {name}: {number(ratio, 2)}"


def udp_unpaced_note(variants, params):
    """:data:`UDP_UNPACED_NOTE` if these runs flood UDP unpaced, else None."""
    return UDP_UNPACED_NOTE if "udp" in variants and not params["rate"] else None


# --- The scale series (benchmarks.scale) -----------------------------------------
STATUS_WORDS = {"ok": "готово", "budget": "не уложился", "skipped": "пропущен",
                "error": "ошибка"}
"""``status`` of a point of the scale series as the table shows it."""

BLOCKS = (  # (key, label, digits after the comma; None: a whole number)
    ("status", "итог", "status"),
    ("join_s", "вход всех, с", 2),
    ("joined", "вошло участников", None),
    ("broadcast_ms", "рассылка одного сообщения всем, мс", 1),
    ("rss_idle_mb", "RSS сервера до входа, МБ", 1),
    ("rss_mb", "RSS сервера после входа, МБ", 1),
    ("rss_per_member_kb", "RSS на участника, КБ", 1),
    ("threads", "потоков у сервера", None),
)


def _members(n):
    return plural(n, "участник", "участника", "участников")


def _scale_cell(point, key, digits, budget):
    if point is None:
        return ""
    if digits == "status":
        return STATUS_WORDS[point["status"]]
    if key == "join_s" and point["status"] == "budget":
        return f"> {short(budget)}"
    if key == "broadcast_ms":  # the point has seconds; a broadcast takes milliseconds
        return cell(None if point["broadcast_s"] is None else point["broadcast_s"] * 1000, digits)
    return cell(point[key], digits)


def format_scale_table(points, join_budget):
    """Points of :func:`benchmarks.scale.run_scale_series` as a table: a block
    per measure, a row per size, a column per variant; then the reasons of the
    points that are not "ok".  ``join_budget``: the series' budget, seconds."""
    variants = list(dict.fromkeys(p["variant"] for p in points))
    sizes = sorted({p["members"] for p in points})
    at = {(p["variant"], p["members"]): p for p in points}
    table = [["участников", *variants]]
    for key, label, digits in BLOCKS:
        table.append([label] + [""] * len(variants))
        table += [[f"  {number(size)}"] + [_scale_cell(at.get((variant, size)), key, digits,
                                                       join_budget) for variant in variants]
                  for size in sizes]
    widths = [max(8, *(len(row[i]) for row in table)) for i in range(len(variants) + 1)]
    lines = ["  ".join([row[0].ljust(widths[0])]
                       + [text.rjust(width) for text, width in zip(row[1:], widths[1:])]).rstrip()
             for row in table]
    lines.append("уведомлений о входе (каждый вход — каждому, кто уже в чате): " + "; ".join(
        f"{number(size)} — {number(size * (size - 1) // 2)}" for size in sizes))
    lines += [f"{p['variant']}, {_members(p['members'])}: {p['reason']}"
              for p in points if p["reason"]]
    return "\n".join(lines)


def point_line(point):
    """One line about a finished point, printed as the series goes."""
    head = f"{point['variant']}, {_members(point['members'])}"
    if point["status"] != "ok":
        return f"{head}: {point['reason']}"
    threads = point["threads"]
    threads = "" if threads is None else ", " + plural(threads, "поток", "потока", "потоков")
    return (f"{head}: вход {cell(point['join_s'], 2)} с, "
            f"рассылка {cell(point['broadcast_s'] * 1000, 1)} мс, "
            f"RSS {cell(point['rss_mb'], 1)} МБ{threads}")
