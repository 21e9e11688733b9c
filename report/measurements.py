"""The measurements section: figures and numbers saved by notebooks/03_timing.ipynb.

The notebook measures (it takes a minute or more and its numbers vary from run
to run); the report only shows what the notebook last saved in
``report/figures/``: the PNG plots and ``timing.json`` with every run of the
benchmark harness, the captions of the plots, a summary and the notebook's
own discussion of the numbers.  So the report text changes only when the
notebook is run again, never by itself.  Anything missing gives a clear
sentence in the report instead of an error.

``timing.json`` (written by the notebook)::

    {"machine": {...}, "figures": {"stem": "caption", ...},
     "summary": {...}, "analysis_markdown": "...", "runs": [{...}, ...]}

The keys of a run are those of ``benchmarks.chat_bench.run_benchmark``.
"""

import json
import math
from pathlib import Path

DATA = "timing.json"

PLACEHOLDER = (
    "Замеры ещё не выполнены: графиков в `report/figures/` нет. Выполните блокнот "
    "`notebooks/03_timing.ipynb` (например, `jupyter nbconvert --to notebook --execute "
    "--inplace notebooks/03_timing.ipynb`), затем `python -m report.build`."
)

NO_DATA = (
    "Файла `report/figures/timing.json` с числами замеров нет (или он повреждён), "
    "поэтому таблиц нет; графики ниже — из последнего выполнения блокнота "
    "`notebooks/03_timing.ipynb`."
)

VARIANT_NAMES = {
    "tcp": "TCP",
    "udp": "UDP",
    "naive": "наивный TCP",
    "ceiling": "потолок стенда",
}
VARIANT_ORDER = ["tcp", "udp", "naive", "ceiling"]


def load(figures):
    """``timing.json`` from ``figures`` as a dict, or None."""
    try:
        data = json.loads((Path(figures) / DATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- Formatting ------------------------------------------------------------------
def _num(value, digits=1):
    """A float with a decimal comma and grouped thousands; "—" for nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")
    return text


def _int(value):
    if value is None:
        return "—"
    return f"{int(value):,}".replace(",", "\u202f")


def _variant(name):
    return VARIANT_NAMES.get(name, name)


def _table(header, rows, align):
    marks = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _order(runs):
    def key(run):
        variant = run.get("variant")
        rank = VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)
        return (rank, str(variant), run.get("clients") or 0, run.get("rate") or 0)
    return sorted(runs, key=key)


# --- Groups of runs (as notebook 03 makes them) ------------------------------------
def _paced_sweep(runs, members):
    """Section 1 of the notebook: one slow sender, growing number of members."""
    rates = {run.get("rate") for run in runs if run.get("clients") in members}
    paced = [run for run in runs if run.get("clients") in members and run.get("rate")
             and run.get("rate") == min(r for r in rates if r)] if any(rates) else []
    return _order(paced)


def _unpaced(runs, exclude):
    """Section 2: one sender as fast as it goes (rate 0), not a named scenario.

    The notebook repeats each point; the run with the median deliveries/s
    stands for it, as on the notebook's plot.  Returns ``(runs, repeats)``.
    """
    points = {}
    for run in runs:
        if not run.get("rate") and not run.get("scenario") and id(run) not in exclude:
            points.setdefault((run.get("variant"), run.get("clients")), []).append(run)
    chosen = []
    for group in points.values():
        group.sort(key=lambda run: run.get("deliveries_per_s") or 0)
        chosen.append(group[len(group) // 2])
    repeats = max((len(group) for group in points.values()), default=0)
    return _order(chosen), repeats


LOADS = {"many-senders": "10 отправителей, 100 участников",
         "slow-reader": "1 отправитель, 20 получателей и 1 нечитающий"}


def _naive_table(wrong):
    """Section 3: what the naive server gets wrong, next to tcp_chat."""
    rows = []
    for variant in VARIANT_ORDER:
        for load, run in (wrong.get(variant) or {}).items():
            expected = run.get("expected")
            share = 100.0 * (run.get("received") or 0) / expected if expected else None
            dropped = run.get("slow_readers_dropped")
            rows.append([
                _variant(variant), LOADS.get(load, load), _num(share, 1),
                _int(run.get("corrupt") or 0), _int(run.get("order_mismatch_members") or 0),
                "да" if run.get("stalled") else "нет",
                "—" if dropped is None else ("да" if dropped else "нет"),
            ])
    return _table(["вариант", "нагрузка", "доставлено, %", "испорчено сообщений",
                   "участников с иным порядком", "рассылка встала", "нечитающий отключён"],
                  rows, "llrrrll")


def _sweep_table(runs):
    rows = []
    for run in runs:
        rows.append([
            run.get("clients"), _variant(run.get("variant")),
            f"{_int(run.get('received'))} из {_int(run.get('expected'))}",
            _num(run.get("latency_p50_ms"), 2), _num(run.get("latency_p95_ms"), 2),
            _num(run.get("latency_p99_ms"), 2),
            _num((run.get("join_s") or 0) * 1000 if run.get("join_s") is not None else None, 1),
            _num(run.get("server_peak_rss_mb"), 1),
        ])
    rows.sort(key=lambda row: (row[0] or 0))
    return _table(["участников", "вариант", "доставлено", "p50, мс", "p95, мс", "p99, мс",
                   "вход, мс", "память, МБ"], rows, "rlrrrrrr")


def _throughput_table(runs):
    rows = []
    for run in runs:
        rows.append([
            run.get("clients"), _variant(run.get("variant")),
            _int(run.get("deliveries_per_s")), _num(run.get("loss_pct"), 1),
            _num(run.get("latency_p50_ms"), 2),
        ])
    rows.sort(key=lambda row: (row[0] or 0))
    return _table(["участников", "вариант", "доставок в секунду", "потери, %", "p50, мс"],
                  rows, "rlrrr")


def _loss_table(runs):
    rows = []
    for run in runs:
        sent, send_s = run.get("sent"), run.get("send_s")
        achieved = sent / send_s if sent and send_s else None
        rows.append([
            _variant(run.get("variant")),
            _int(run.get("rate")) if run.get("rate") else "без паузы",
            _int(achieved), _int(run.get("messages")),
            f"{_int(run.get('received'))} из {_int(run.get('expected'))}",
            _num(run.get("loss_pct"), 1),
        ])
    return _table(["вариант", "задано, сообщ./с", "вышло, сообщ./с", "сообщений",
                   "доставлено", "потери, %"], rows, "lrrrrr")


def _summary_table(summary):
    p50 = summary.get("latency_p50_ms_at_max_members") or {}
    join = summary.get("join_s_at_max_members") or {}
    memory = summary.get("memory_kb_per_member") or {}
    variants = [v for v in VARIANT_ORDER if v in p50 or v in join or v in memory]
    if not variants:
        return ""
    rows = []
    for variant in variants:
        rows.append([
            _variant(variant), _num(p50.get(variant), 2),
            _num(join[variant] * 1000 if join.get(variant) is not None else None, 0),
            _num(memory.get(variant), 0),
        ])
    return _table(["вариант", "медиана задержки, мс", "вход всех участников, мс",
                   "память сервера на участника, КБ"], rows, "lrrr")


# --- The section -------------------------------------------------------------------------
def section(figures, report):
    """Markdown of the section from the files in ``figures`` (Path);
    image paths relative to ``report`` (the folder of report.md)."""
    figures = Path(figures)
    pngs = sorted(figures.glob("*.png")) if figures.is_dir() else []
    if not pngs:
        return PLACEHOLDER
    data = load(figures)
    parts = []
    if data is None:
        parts.append(NO_DATA)
        data = {}
    runs = [run for run in data.get("runs") or [] if isinstance(run, dict)]
    summary = data.get("summary") or {}
    machine = data.get("machine") or {}
    captions = data.get("figures") or {}

    # 8.1 How it was measured.
    intro = [
        "### 8.1. Методика",
        "Замеры выполнены блокнотом `notebooks/03_timing.ipynb` со стендом "
        "`benchmarks/chat_bench.py`. Сервер каждого варианта запускается отдельным "
        "процессом на 127.0.0.1 и свободном порту; стенд подключает N участников, "
        "один из них отправляет сообщения по 64 байта, в каждом записано время "
        "отправки, а стенд отмечает время прихода каждой копии у каждого получателя. "
        "**Задержка** — от отправки до прихода (перцентили p50, p95, p99 по всем "
        "доставкам); **пропускная способность** — доставок (сообщение × получатель) в "
        "секунду; **потери** — доля ожидаемых доставок, которые не пришли; **вход** — "
        "от первого подключения до последнего приветствия; **память** — пиковый RSS "
        "процесса сервера. Для сравнения рядом измерен «наивный» сервер TCP "
        "(`benchmarks/naive_server.py`: поток на клиента, куски `recv()` пересылаются "
        "как есть, без разбора на строки и без защиты от медленных клиентов), а в замере "
        "пропускной способности — простейший однопоточный пересыльщик "
        "(`benchmarks/forwarder.py`): ориентир того, сколько выдерживает сам стенд.",
    ]
    if machine or runs:
        loads = [run.get("load_1min") for run in runs if run.get("load_1min") is not None]
        facts = []
        if machine.get("system"):
            facts.append(f"{machine['system']}")
        if machine.get("cpu_count"):
            facts.append(f"процессоров: {machine['cpu_count']}")
        if machine.get("python"):
            facts.append(f"Python {machine['python']}")
        line = "Машина: " + ", ".join(facts) + "." if facts else ""
        if loads:
            line += (f" Средняя загрузка машины (load average за минуту) во время замеров — "
                     f"от {_num(min(loads), 1)} до {_num(max(loads), 1)}: машина была занята "
                     "и другой работой, поэтому числа шумные и от запуска к запуску меняются "
                     "на десятки процентов; выводы ниже от этого шума не зависят.")
        if line:
            intro.append(line.strip())
    parts.append("\n\n".join(intro))

    # 8.2 Tables.
    tables = ["### 8.2. Таблицы"]
    members = set(summary.get("members") or [])
    sweep = _paced_sweep(runs, members) if members else []
    used = {id(run) for run in sweep}
    loss_clients = {run.get("clients") for run in runs
                    if run.get("rate") and id(run) not in used}
    loss = _order([run for run in runs if run.get("clients") in loss_clients
                   and id(run) not in used])
    # By variant, then by speed, "as fast as it goes" (rate 0) last.
    loss.sort(key=lambda run: (VARIANT_ORDER.index(run["variant"])
                               if run.get("variant") in VARIANT_ORDER else 9,
                               run.get("rate") or math.inf))
    used |= {id(run) for run in loss}
    unpaced, repeats = _unpaced(runs, used)
    if summary:
        table = _summary_table(summary)
        biggest = max(summary.get("members") or [0])
        if table:
            tables.append("Таблица {{tab:meas-summary}} — Итог замеров"
                          + (f": задержка и вход при {biggest} участниках" if biggest else "")
                          + "\n\n" + table)
    if sweep:
        rate = sweep[0].get("rate")
        tables.append(f"Таблица {{{{tab:meas-sweep}}}} — Задержка, вход и память: один "
                      f"отправитель, {_int(rate)} сообщений в секунду\n\n" + _sweep_table(sweep))
    if unpaced:
        tables.append("Таблица {{tab:meas-throughput}} — Пропускная способность: один "
                      "отправитель без паузы между сообщениями"
                      + (f" (медиана {repeats} запусков)" if repeats > 1 else "")
                      + "\n\n" + _throughput_table(unpaced))
    if summary.get("naive_wrong"):
        tables.append("Таблица {{tab:meas-naive}} — Что делает неправильно наивный сервер: "
                      "те же нагрузки для tcp_chat и naive\n\n"
                      + _naive_table(summary["naive_wrong"]))
    if loss:
        tables.append("Таблица {{tab:meas-loss}} — Потери в зависимости от скорости отправки "
                      f"({_int(max(loss_clients) - 1)} получателей)\n\n"
                      + _loss_table(loss))
    if len(tables) == 1:
        tables.append("Чисел замеров в `report/figures/timing.json` нет.")
    parts.append("\n\n".join(tables))

    # 8.3 Figures, in the notebook's order, then any others.
    shown = []
    stems = [stem for stem in captions if (figures / f"{stem}.png").exists()]
    stems += [png.stem for png in pngs if png.stem not in captions and png.stem != PING_FIGURE]
    for stem in stems:
        png = figures / f"{stem}.png"
        caption = captions.get(stem) or stem.replace("_", " ")
        shown.append(f"![{caption}]({png.relative_to(report).as_posix()})\n\n"
                     f"Рисунок {{{{fig:meas-{stem}}}}} — {caption}")
    parts.append("### 8.3. Графики\n\n" + "\n\n".join(shown))

    # 8.4 The notebook's discussion, written from the same numbers.
    analysis = (data.get("analysis_markdown") or "").strip()
    if analysis:
        parts.append("### 8.4. Обсуждение\n\n"
                     "Текст ниже составлен блокнотом из чисел того же запуска.\n\n"
                     + analysis)
    ping = _ping_part(figures, report)
    if ping:
        parts.append(ping)
    return "\n\n".join(parts)


PING_DATA, PING_FIGURE = "udp_ping.json", "udp_ping_loss"


def _ping_part(figures, report):
    """8.5: the pinger at injected loss, from notebook 02 (``udp_ping.json``)."""
    try:
        data = json.loads((figures / PING_DATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    rows = [[r["variant"], f"{r['injected_pct']} %", f"{r['received']} из {r['sent']}",
             f"{r['lost_pct']:.0f} %".replace(".", ","),
             "/".join(_num(value, 2) for value in r["rtt_ms"]) or "—"]
            for r in data.get("results") or []]
    text = ("### 8.5. Потери UDP, которые видно: пингер\n\n"
            "Блокнот `notebooks/02_udp_chat.ipynb` запускает сервер UDP с искусственными "
            "потерями (`--loss`, повторяемыми благодаря `--seed`) и меряет их пингером "
            f"клиента (`/ping`): {data.get('pings')} пронумерованных запросов, на каждый "
            "сервер отвечает `*** pong` с тем же номером; запрос без ответа за 0,3 с "
            "считается потерянным. Рядом — тот же пингер по TCP (таблица "
            "{{tab:meas-ping}}, рисунок {{fig:meas-ping}}).\n\n"
            "Таблица {{tab:meas-ping}} — Пингер при потерях, заданных серверу\n\n"
            + _table(["вариант", "потери сервера", "ответов", "потеряно", "RTT мин/сред/макс, мс"],
                     rows, "lrrrr"))
    png = figures / f"{PING_FIGURE}.png"
    if png.exists():
        caption = "Пингер: измеренные потери против заданных"
        text += (f"\n\n![{caption}]({png.relative_to(report).as_posix()})\n\n"
                 f"Рисунок {{{{fig:meas-ping}}}} — {caption}")
    return text + ("\n\nИзмеренная доля потерь близка к заданной, но не равна ей: 40 "
                   "запросов — малая выборка. По TCP потерь нет: потерянный в сети сегмент "
                   "ядро пересылает само, и потеря видна только как задержка.")


def conclusions(figures):
    """An item of the conclusions drawn from the measurements ("" if none)."""
    data = load(figures)
    if not data or not data.get("summary"):
        return ""
    summary = data["summary"]
    members = summary.get("members") or []
    biggest = max(members) if members else None
    p50 = summary.get("latency_p50_ms_at_max_members") or {}
    memory = summary.get("memory_kb_per_member") or {}
    said = []
    if biggest and p50.get("tcp") is not None and p50.get("udp") is not None:
        said.append(f"при {biggest} участниках медиана задержки — {_num(p50['tcp'], 1)} мс "
                    f"у TCP и {_num(p50['udp'], 1)} мс у UDP")
    if memory.get("tcp") is not None and memory.get("udp") is not None:
        said.append(f"участник стоит серверу около {_num(memory['tcp'], 0)} КБ памяти у TCP "
                    f"(два потока) и около {_num(memory['udp'], 0)} КБ у UDP")
    if summary.get("udp_lossless_up_to_rate") is not None:
        said.append("UDP доставлял всё лишь до "
                    f"{_int(summary['udp_lossless_up_to_rate'])} сообщений в секунду, а дальше "
                    "молча терял сообщения")
    if summary.get("tcp_lost_total") == 0:
        said.append("TCP не потерял ни одной доставки")
    if not said:
        return ""
    return ("6. Замеры (раздел 8) показали цену надёжности: " + "; ".join(said) + ". "
            "TCP платит памятью, потоками и более долгим входом за доставку всего и по "
            "порядку, UDP легче для сервера, но при перегрузке теряет сообщения.")
