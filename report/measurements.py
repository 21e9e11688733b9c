"""The measurements section: figures and numbers saved by the notebooks.

The notebooks measure (it takes a minute or more and the numbers vary from run
to run); the report only shows what they last saved in ``report/figures/``:
the PNG plots, ``timing.json`` with every run of the benchmark harness
(``notebooks/03_timing.ipynb``) and ``udp_ping.json`` (``notebooks/02_udp_chat.ipynb``).
So the report text changes only when a notebook is run again, never by
itself.  Anything missing gives a clear sentence in the report instead of an
error.

Every number the text quotes is taken from the same run and written by the
same function (:mod:`report.ru`) with the same digits as the table or plot
it comes from, so text and tables never disagree.

``timing.json`` (written by the notebook)::

    {"machine": {...}, "figures": {"stem": "caption", ...},
     "summary": {...}, "runs": [{...}, ...]}

The keys of a run are those of ``benchmarks.chat_bench.run_benchmark``.

The section is a list of subsections, :data:`SUBSECTIONS`: each is a function
``(Data) -> str`` that returns its Markdown (``""`` to leave it out) and
claims the plots it shows with :meth:`Data.figure`.  To add one, write such a
function and put it in the list; plots nobody claimed are shown at the end.
"""

import json
import math
from pathlib import Path

from chat_common import config
from report import ru

DATA = "timing.json"
PING_DATA, PING_FIGURE = "udp_ping.json", "udp_ping_loss"

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
    "select": "TCP, цикл событий",
    "udp": "UDP",
    "naive": "наивный",
    "ceiling": "потолок стенда",
}
VARIANT_ORDER = ["tcp", "select", "udp", "naive", "ceiling"]

LOADS = {"many-senders": "много отправителей", "slow-reader": "нечитающий"}
"""Short names of the scenarios in the table; the caption says what each was."""


def load(figures):
    """``timing.json`` from ``figures`` as a dict, or None."""
    try:
        data = json.loads((Path(figures) / DATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# --- Formatting: the one way each kind of number is written -------------------------
def ms(value):
    """A latency in milliseconds, as in every table: ``0,37``."""
    return ru.decimal(value, 2)


def join_ms(seconds):
    """The time to join, in milliseconds: ``1 068,3``."""
    return ru.decimal(seconds * 1000 if seconds is not None else None, 1)


def per_s(value):
    """Deliveries or messages per second: ``1 941 010``."""
    return ru.integer(value)


def pct(value):
    """A share in per cent, one digit: ``94,8``."""
    return ru.decimal(value, 1)


def kb(value):
    """Memory per member, as on the notebook's plot: ``47``."""
    return ru.integer(value)


def _variant(name):
    return VARIANT_NAMES.get(name, name)


def _table(header, rows, align):
    marks = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _rank(variant):
    return VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)


def _order(runs):
    return sorted(runs, key=lambda run: (_rank(run.get("variant")), str(run.get("variant")),
                                         run.get("clients") or 0, run.get("rate") or 0))


def _delivered(run):
    return f"{ru.integer(run.get('received'))} из {ru.integer(run.get('expected'))}"


def _rate_words(rate):
    return ru.count(int(rate), "сообщение", "сообщения", "сообщений") + " в секунду"


def _up_to(rate):
    """``5 000 сообщений`` after «до» (genitive): the noun agreeing with the rate."""
    return ru.count(int(rate), "сообщения", "сообщений", "сообщений")


def _deliveries(value):
    """``153 321 доставка``: deliveries per second with the noun agreeing."""
    return ru.count(int(round(value)), "доставка", "доставки", "доставок")


# --- The data, grouped as notebook 03 makes its runs ----------------------------------
class Data:
    """What the subsections read: the runs of ``timing.json`` in their groups,
    the other saved files, and the plots (see :meth:`figure`)."""

    def __init__(self, figures, report):
        self.folder = Path(figures)
        self.report = Path(report)
        self.pngs = sorted(self.folder.glob("*.png")) if self.folder.is_dir() else []
        raw = load(self.folder)
        self.missing = raw is None
        raw = raw or {}
        self.runs = [run for run in raw.get("runs") or [] if isinstance(run, dict)]
        self.summary = raw.get("summary") or {}
        self.machine = raw.get("machine") or {}
        self.captions = raw.get("figures") or {}
        self.scale = raw.get("scale") if isinstance(raw.get("scale"), dict) else {}
        self.claimed = set()
        members = set(self.summary.get("members") or [])
        self.sweep = self._paced_sweep(members) if members else []
        used = {id(run) for run in self.sweep}
        self.loss = self._loss(used)
        used |= {id(run) for run in self.loss}
        self.unpaced, self.repeats = self._unpaced(used)
        self.scenarios = {}
        for run in self.runs:
            if run.get("scenario"):
                self.scenarios.setdefault(run["scenario"], {})[run.get("variant")] = run

    def _paced_sweep(self, members):
        """Notebook section 1: one slow sender, a growing number of members."""
        rates = [run.get("rate") for run in self.runs
                 if run.get("clients") in members and run.get("rate")]
        if not rates:
            return []
        return _order([run for run in self.runs if run.get("clients") in members
                       and run.get("rate") == min(rates) and not run.get("scenario")])

    def _loss(self, used):
        """Notebook section 4: loss against the sending rate, one group of members."""
        clients = {run.get("clients") for run in self.runs
                   if run.get("rate") and id(run) not in used and not run.get("scenario")}
        loss = [run for run in self.runs if run.get("clients") in clients
                and id(run) not in used and not run.get("scenario")]
        # By variant, then by speed, "as fast as it goes" (rate 0) last.
        return sorted(loss, key=lambda run: (_rank(run.get("variant")),
                                             run.get("rate") or math.inf))

    def _unpaced(self, used):
        """Notebook section 2: one sender as fast as it goes, each point repeated;
        the run with the median deliveries/s stands for it, as on the notebook's
        plot.  Returns ``(runs, repeats)``."""
        points = {}
        for run in self.runs:
            if not run.get("rate") and not run.get("scenario") and id(run) not in used:
                points.setdefault((run.get("variant"), run.get("clients")), []).append(run)
        chosen = []
        for group in points.values():
            group.sort(key=lambda run: run.get("deliveries_per_s") or 0)
            chosen.append(group[len(group) // 2])
        repeats = max((len(group) for group in points.values()), default=0)
        return _order(chosen), repeats

    # Looking things up -------------------------------------------------------------
    def point(self, runs, variant, clients):
        """The run of ``variant`` with ``clients`` members in ``runs`` (or None)."""
        for run in runs:
            if run.get("variant") == variant and run.get("clients") == clients:
                return run
        return None

    def figure(self, stem, caption=None):
        """Markdown of plot ``stem`` with its caption (``""`` if there is no such
        PNG); marks it as shown.  The key of its number is ``fig:meas-STEM``."""
        png = self.folder / f"{stem}.png"
        if not self.has_figure(stem):
            return ""
        self.claimed.add(stem)
        caption = caption or self.captions.get(stem) or stem.replace("_", " ")
        return (f"![{caption}]({png.relative_to(self.report).as_posix()})\n\n"
                f"Рисунок {{{{fig:meas-{stem}}}}} — {caption}")

    def has_figure(self, stem):
        """Whether plot ``stem`` is shown in the report (it exists, and is not one
        of :data:`LEFT_TO_NOTEBOOKS`)."""
        return stem not in LEFT_TO_NOTEBOOKS and (self.folder / f"{stem}.png").exists()


# --- Subsections ------------------------------------------------------------------------
def method(data):
    text = [
        "### Методика",
        "Замеры выполнены блокнотом `notebooks/03_timing.ipynb` (там же все графики) со "
        "стендом `benchmarks/chat_bench.py`. Сервер запускается отдельным процессом на "
        "127.0.0.1; отправитель шлёт сообщения по 64 байта с временем отправки внутри, "
        "а стенд отмечает время прихода каждой копии. **Задержка** — от отправки до прихода "
        "(перцентили p50, p95, p99 по всем доставкам; p50 — медиана); **пропускная "
        "способность** — доставок (сообщение × получатель) в секунду; **потери** — доля "
        "ожидаемых доставок, которые не пришли; **вход** — от первого подключения до "
        "последнего приветствия; **память** — пиковый размер процесса сервера в "
        "оперативной памяти (RSS). Для сравнения измерены «наивный» сервер TCP "
        "(`benchmarks/naive_server.py`: поток на клиента, куски `recv()` пересылаются как "
        "есть, без кадрирования и без защиты от медленных клиентов) и простейший "
        "однопоточный пересыльщик (`benchmarks/forwarder.py`) — потолок самого стенда.",
    ]
    if data.missing:
        text.append(NO_DATA)
    loads = [run.get("load_1min") for run in data.runs if run.get("load_1min") is not None]
    facts = []
    if data.machine.get("system"):
        facts.append(f"{data.machine['system']}")
    if data.machine.get("cpu_count"):
        facts.append(f"процессоров: {data.machine['cpu_count']}")
    if data.machine.get("python"):
        facts.append(f"Python {data.machine['python']}")
    line = "Машина: " + ", ".join(facts) + "." if facts else ""
    if loads:
        line += (" Средняя загрузка машины за минуту (`os.getloadavg()`, в неё входят и "
                 "процессы самих замеров) во время замеров подразделов "
                 "{{sec:Задержка, вход и память}}–{{sec:Потери при перегрузке}} — от "
                 f"{ru.decimal(min(loads), 1)} до "
                 f"{ru.decimal(max(loads), 1)}; числа шумные и от запуска к запуску "
                 "меняются на десятки процентов, а выводы ниже от этого шума не зависят.")
    if line:
        text.append(line.strip())
    return "\n\n".join(text)


def latency(data):
    """Latency, joining and memory against the number of members."""
    sweep = data.sweep
    if not sweep:
        return ""
    rows = []
    # TCP and UDP only: the text compares them; the naive server's line is on the plot.
    for run in sorted((run for run in sweep if run.get("variant") in ("tcp", "udp")),
                      key=lambda run: run.get("clients") or 0):
        rows.append([ru.integer(run.get("clients")), _variant(run.get("variant")), _delivered(run),
                     ms(run.get("latency_p50_ms")), ms(run.get("latency_p95_ms")),
                     ms(run.get("latency_p99_ms")), join_ms(run.get("join_s")),
                     ru.decimal(run.get("server_peak_rss_mb"), 1)])
    members = sorted({run.get("clients") for run in sweep})
    small, big = members[0], members[-1]
    out = ["### Задержка, вход и память",
           "Один отправитель шлёт сообщения с постоянной скоростью, число участников "
           "растёт; результаты — в таблице {{tab:meas-sweep}}"
           + (" и на рисунке {{fig:meas-latency_vs_members}}."
              if data.has_figure("latency_vs_members") else "."),
           f"Таблица {{{{tab:meas-sweep}}}} — Задержка, вход и память: один отправитель, "
           f"{_rate_words(sweep[0].get('rate'))}\n\n"
           + _table(["участников", "вариант", "доставлено", "p50, мс", "p95, мс", "p99, мс",
                     "вход, мс", "память, МБ"], rows, "rlrrrrrr")]
    tcp_small, udp_small = data.point(sweep, "tcp", small), data.point(sweep, "udp", small)
    tcp_big, udp_big = data.point(sweep, "tcp", big), data.point(sweep, "udp", big)
    said = []
    if tcp_small and udp_small:
        said.append(f"С {ru.count(small, 'участником', 'участниками', 'участниками')} сообщение "
                    f"доходит за {ms(tcp_small['latency_p50_ms'])} мс по TCP и за "
                    f"{ms(udp_small['latency_p50_ms'])} мс по UDP (медиана, таблица "
                    "{{tab:meas-sweep}}): на петлевом интерфейсе это время уходит на Python и "
                    "системные вызовы, а не на сеть.")
    if tcp_big and udp_big:
        said.append(
            "С ростом числа участников задержка растёт: сервер рассылает сообщение "
            "получателям по очереди, и последний получает его позже первого. При "
            f"{ru.count(big, 'участнике', 'участниках', 'участниках')} медиана — "
            f"{ms(tcp_big['latency_p50_ms'])} мс у TCP и "
            f"{ms(udp_big['latency_p50_ms'])} мс у UDP"
            + (" (рисунок {{fig:meas-latency_vs_members}})" if data.has_figure(
                "latency_vs_members") else "")
            + ". У TCP она растёт быстрее: чтобы разослать одно сообщение, сервер TCP "
            f"будит {ru.count(big - 1, 'поток', 'потока', 'потоков')} отправки, и "
            "они по очереди получают процессор и GIL, а однопоточный сервер UDP делает "
            f"{ru.count(big - 1, 'вызов', 'вызова', 'вызовов')} `sendto()` подряд.")
        said.append(
            f"Вход {ru.count(big, 'участника', 'участников', 'участников')} занял по TCP "
            f"{join_ms(tcp_big.get('join_s'))} мс, по UDP — {join_ms(udp_big.get('join_s'))} мс"
            + " (столбец «вход» таблицы {{tab:meas-sweep}}). Вход по TCP дороже: тройное "
            "рукопожатие, затем приглашение и имя, и сервер "
            "создаёт на участника два потока; по UDP вход — одна датаграмма `/join` и ответ "
            "на неё.")
    memory = data.summary.get("memory_kb_per_member") or {}
    if memory.get("tcp") is not None and memory.get("udp") is not None:
        said.append(
            f"Каждый участник TCP стоит серверу около {kb(memory['tcp'])} КБ памяти (наклон "
            "прямой, проведённой методом наименьших квадратов через столбец «память» "
            "таблицы {{tab:meas-sweep}}; график — в блокноте): два потока со своими стеками "
            "и объекты соединения, очереди отправки и "
            f"разборщика строк. Участник UDP — несколько записей в словарях, около "
            f"{kb(memory['udp'])} КБ, на уровне шума.")
    # The plots before the text: text fills a page, a plot that does not fit leaves a gap.
    figure = data.figure("latency_vs_members")
    if figure:
        out.append(figure)
    if said:
        out.append(" ".join(said[:2]))
        out += said[2:]
    return "\n\n".join(out)


def throughput(data):
    """One sender as fast as it goes: deliveries per second."""
    runs = data.unpaced
    if not runs:
        return ""
    rows = []
    for run in sorted(runs, key=lambda run: run.get("clients") or 0):
        rows.append([ru.integer(run.get("clients")), _variant(run.get("variant")),
                     per_s(run.get("deliveries_per_s")), pct(run.get("loss_pct")),
                     ms(run.get("latency_p50_ms"))])
    median = f" (медиана {ru.count(data.repeats, 'запуска', 'запусков', 'запусков')})" \
        if data.repeats > 1 else ""
    out = ["### Пропускная способность",
           "Один отправитель шлёт сообщения без паузы; результаты — в таблице "
           "{{tab:meas-throughput}}"
           + (" и на рисунке {{fig:meas-throughput}}." if data.has_figure("throughput") else "."),
           "Таблица {{tab:meas-throughput}} — Пропускная способность: один отправитель без "
           f"паузы между сообщениями{median}\n\n"
           + _table(["участников", "вариант", "доставок в секунду", "потери, %", "p50, мс"],
                    rows, "rlrrr")]
    big = max(run.get("clients") or 0 for run in runs)
    tcp, naive = data.point(runs, "tcp", big), data.point(runs, "naive", big)
    ceiling, udp = data.point(runs, "ceiling", big), data.point(runs, "udp", big)
    said = ["Без паузы между сообщениями сервер TCP разбирает за один `recv()` все "
            "пришедшие строки и отправляет каждому участнику всё накопленное одним "
            "вызовом."]
    if tcp and naive:
        said.append(f"При {ru.count(big, 'участнике', 'участниках', 'участниках')} у него "
                    f"{_deliveries(tcp['deliveries_per_s'])} в секунду, у наивного сервера — "
                    f"{per_s(naive['deliveries_per_s'])}"
                    + (f", у простейшего пересыльщика — {per_s(ceiling['deliveries_per_s'])}"
                       if ceiling else "")
                    + " (таблица {{tab:meas-throughput}}"
                    + (", рисунок {{fig:meas-throughput}}" if data.has_figure("throughput")
                       else "") + ").")
        said.append(
            "Наш сервер медленнее наивного: на каждую доставку он тратит несколько "
            "операций Python — разбор строки, проверку, подпись именем, раскладку по "
            "очередям, — а наивный пересылает куски `recv()` как есть (что он при этом "
            "ломает, показывает подраздел {{sec:Наивный сервер и медленный читатель}}).")
    if udp:
        said.append(f"Сервер UDP отправляет каждую датаграмму каждому получателю отдельным "
                    "`sendto()` и не может попросить отправителя подождать: у него "
                    f"{_deliveries(udp['deliveries_per_s'])} в секунду, а "
                    f"{ru.percent(udp.get('loss_pct'))} доставок потерялось.")
    cpus = ru.count(data.machine.get('cpu_count') or 0, 'процессор', 'процессора', 'процессоров')
    said.append(f"Стенд и сервер делят {cpus}, "
                "поэтому запуски расходятся на десятки процентов."
                if data.machine.get("cpu_count") else "")
    out.append(" ".join(part for part in said if part))
    figure = data.figure("throughput")
    if figure:
        out.append(figure)
    return "\n\n".join(out)


def _slow_reader_sentence(run):
    """What happened to the member who never reads, told from the run's own numbers."""
    messages, size = run.get("messages") or 0, run.get("size") or 0
    backlog = messages * (run.get("senders") or 1)
    backlog_bytes = backlog * size  # the text alone: each line is a few bytes longer
    limits = (f"{ru.count(config.SEND_QUEUE_LIMIT, 'строки', 'строк', 'строк')} или "
              f"{ru.count(config.SEND_QUEUE_BYTES, 'байта', 'байт', 'байт')}")
    unread = (f"ему шло {ru.count(backlog, 'сообщение', 'сообщения', 'сообщений')} по "
              f"{ru.count(size, 'байту', 'байта', 'байт')}, больше "
              f"{ru.decimal(backlog_bytes / 1e6, 1)} МБ")
    expected = run.get("expected")
    others = ("остальные получили всё" if expected and run.get("received") == expected else
              f"остальные получили {ru.percent(100.0 * (run.get('received') or 0) / expected)}"
              if expected else "")
    if run.get("slow_readers_dropped"):
        return (f"Наш сервер отключил нечитающего: {unread}, а его очередь отправки "
                f"(`Outbox`) вмещает не больше {limits} (`--send-queue-limit`, "
                "`--send-queue-bytes`) сверх того, что держат буферы ядра"
                + (f"; {others}." if others else "."))
    return (f"Наш сервер нечитающего не отключил: {unread}, и этот долг поместился в его "
            f"очередь отправки (`Outbox`, не больше {limits}) и буферы ядра. Такой участник "
            "просто отстаёт, а остальные этого не замечают; отключён он был бы, если бы "
            "долг превысил один из пределов.")


def _load(run):
    """``100 участников, из них 10 отправляют, 1 000 сообщений у каждого отправителя``:
    the workload of a scenario run."""
    senders, clients = run.get("senders") or 0, run.get("clients") or 0
    slow = run.get("slow_readers") or 0
    # Every member reads, the senders too (they get the others' messages).
    text = (ru.count(clients, "участник", "участника", "участников") + ", из них "
            + ru.integer(senders) + (" отправляет" if senders == 1 else " отправляют"))
    if slow:
        text += ", и ещё " + ru.count(slow, "нечитающий", "нечитающих", "нечитающих")
    return text + ", " + ru.count(run.get("messages") or 0, "сообщение", "сообщения",
                                  "сообщений") + (" у каждого отправителя" if senders > 1 else "")


def naive(data):
    """What the naive server gets wrong, next to ours, on the same loads."""
    wrong = data.summary.get("naive_wrong") or {}
    if not wrong:
        return ""
    rows = []
    for variant in VARIANT_ORDER:
        for load_name, run in (wrong.get(variant) or {}).items():
            expected = run.get("expected")
            share = 100.0 * (run.get("received") or 0) / expected if expected else None
            dropped = run.get("slow_readers_dropped")
            rows.append([
                _variant(variant), LOADS.get(load_name, load_name), pct(share),
                ru.integer(run.get("corrupt") or 0),
                ru.integer(run.get("order_mismatch_members") or 0),
                "да" if run.get("stalled") else "нет",
                "—" if dropped is None else ("да" if dropped else "нет"),
            ])
    loads = []
    for name, title in LOADS.items():
        run = data.scenarios.get(name, {}).get("tcp")
        if run:
            loads.append(f"«{title}» — {_load(run)}")
    out = ["### Наивный сервер и медленный читатель",
           "Те же нагрузки для нашего сервера и для наивного — в таблице {{tab:meas-naive}}.",
           "Таблица {{tab:meas-naive}} — Что делает неправильно наивный сервер: те же "
           "нагрузки для нашего сервера TCP и наивного"
           + (f" ({'; '.join(loads)})" if loads else "")
           + ". Столбцы: испорчено сообщений, участников с иным порядком, встала ли "
           "рассылка, отключён ли нечитающий\n\n"
           + _table(["вариант", "нагрузка", "доставлено, %", "испорчено", "иной порядок",
                     "встала", "отключён"], rows, "llrrrll")]
    said = []
    ours, theirs = wrong.get("tcp") or {}, wrong.get("naive") or {}
    many, many_ours = theirs.get("many-senders"), ours.get("many-senders")
    if many and many_ours:
        said.append(
            "При десяти отправителях сразу наивный сервер испортил "
            f"{ru.count(many.get('corrupt') or 0, 'сообщение', 'сообщения', 'сообщений')} "
            "(куски разных отправителей перемешались внутри строки: кадрирования нет), и у "
            + ru.count(many.get('order_mismatch_members') or 0, 'участника', 'участников',
                       'участников') + " порядок "
            "сообщений не такой, как у других (блокировки нет); у нашего сервера испорчено "
            f"{ru.integer(many_ours.get('corrupt') or 0)}, иной порядок — у "
            f"{ru.integer(many_ours.get('order_mismatch_members') or 0)} (таблица "
            "{{tab:meas-naive}}).")
    slow, slow_ours = theirs.get("slow-reader"), ours.get("slow-reader")
    if slow and slow_ours:
        share = 100.0 * (slow.get("received") or 0) / slow["expected"] if slow.get("expected") \
            else None
        share_ours = 100.0 * (slow_ours.get("received") or 0) / slow_ours["expected"] \
            if slow_ours.get("expected") else None
        said.append(
            f"С одним нечитающим участником наивный сервер доставил быстрым получателям "
            f"{ru.percent(share)} сообщений, "
            + ("после чего рассылка встала: `sendall()` в потоке отправителя ждёт, пока "
               "нечитающий освободит буфер, то есть вечно. " if slow.get("stalled") else ". ")
            + f"Наш сервер доставил им {ru.percent(share_ours)}.")
        run = data.scenarios.get("slow-reader", {}).get("tcp")
        if run:
            said.append(_slow_reader_sentence(run))
    out += said
    return "\n\n".join(out)


def udp_loss(data):
    """Loss against the sending rate."""
    runs = data.loss
    if not runs:
        return ""
    rows = []
    for run in runs:
        sent, send_s = run.get("sent"), run.get("send_s")
        rows.append([_variant(run.get("variant")),
                     per_s(run.get("rate")) if run.get("rate") else "без паузы",
                     per_s(sent / send_s if sent and send_s else None),
                     ru.integer(run.get("messages")), _delivered(run), pct(run.get("loss_pct"))])
    receivers = max(run.get("clients") or 0 for run in runs) - 1
    out = ["### Потери при перегрузке",
           "Один отправитель шлёт с заданной скоростью, от медленной до предельной; "
           "потери — в таблице {{tab:meas-loss}}"
           + (" и на рисунке {{fig:meas-udp_loss_vs_rate}}."
              if data.has_figure("udp_loss_vs_rate") else "."),
           "Таблица {{tab:meas-loss}} — Потери в зависимости от скорости отправки "
           f"({ru.count(receivers, 'получатель', 'получателя', 'получателей')})\n\n"
           + _table(["вариант", "задано, сообщ./с", "вышло, сообщ./с", "сообщений",
                     "доставлено", "потери, %"], rows, "lrrrrr")]
    udp = [run for run in runs if run.get("variant") == "udp"]
    said = []
    lossless = lossless_rate(runs)
    if udp:
        worst = max(udp, key=lambda run: run.get("loss_pct") or 0)
        said.append(
            "UDP терял доставки, когда скорость отправки превышала то, что однопоточный "
            "сервер успевал разослать: "
            + (f"скорости до {_up_to(lossless)} в секунду прошли без потерь, "
               if lossless else "")
            + f"а наибольшая потеря — {ru.percent(worst.get('loss_pct'))} (таблица "
            "{{tab:meas-loss}}"
            + (", рисунок {{fig:meas-udp_loss_vs_rate}}" if data.has_figure("udp_loss_vs_rate")
               else "") + "). Лишние датаграммы ядро молча выбрасывает, когда буфер приёма "
            "сокета полон; ни отправитель, ни сервер об этом не узнают. Точка перелома "
            "зависит от машины и её загрузки, а сама картина повторяется от запуска к запуску.")
    tcp_runs = [run for run in data.runs if run.get("variant") == "tcp"]
    if tcp_runs:
        lost = sum(run.get("lost") or 0 for run in tcp_runs)
        said.append(
            f"TCP во всех {ru.count(len(tcp_runs), 'замере', 'замерах', 'замерах')} блокнота "
            + ("не потерял ни одной доставки: при перегрузке он не выбрасывает данные, а "
               "замедляет отправителя (окно приёма и буферы)." if lost == 0 else
               f"потерял {ru.count(lost, 'доставку', 'доставки', 'доставок')}."))
    out += said
    figure = data.figure("udp_loss_vs_rate")
    if figure:
        out.append(figure)
    return "\n\n".join(out)


def lossless_rate(runs):
    """The highest rate up to which every UDP run of ``runs`` lost nothing (or None)."""
    best = None
    for run in sorted((run for run in runs if run.get("variant") == "udp" and run.get("rate")),
                      key=lambda run: run["rate"]):
        if run.get("loss_pct"):
            break
        best = run["rate"]
    return best


def ping(data):
    """The pinger at injected loss, from notebook 02 (``udp_ping.json``)."""
    try:
        saved = json.loads((data.folder / PING_DATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    results = saved.get("results") or []
    rows = [[r["variant"], ru.percent(r["injected_pct"], 0),
             f"{ru.integer(r['received'])} из {ru.integer(r['sent'])}",
             ru.percent(r["lost_pct"]), " / ".join(ms(value) for value in r["rtt_ms"]) or "—"]
            for r in results]
    pings = saved.get("pings")
    text = ("### Потери, которые видно: пингер\n\n"
            "Блокнот `notebooks/02_udp_chat.ipynb` запускает сервер UDP с искусственными "
            "потерями (`--loss`, `--seed`) и меряет их пингером клиента (`/ping`): "
            + ru.count(pings or 0, "пронумерованный запрос", "пронумерованных запроса",
                       "пронумерованных запросов") + "; "
            "запрос без ответа `*** pong` за 0,3\u00a0с считается потерянным (таблица "
            "{{tab:meas-ping}}, последняя строка — тот же пингер по TCP).\n\n"
            "Таблица {{tab:meas-ping}} — Пингер при потерях, заданных серверу\n\n"
            + _table(["вариант", "потери сервера", "ответов", "потеряно",
                      "время ответа мин. / сред. / макс., мс"], rows, "lrrrr"))
    return text + ("\n\nИзмеренная доля потерь близка к заданной, но не равна ей: "
                   f"{ru.count(pings or 0, 'запрос', 'запроса', 'запросов')} — малая выборка. "
                   "Серверу TCP потери не задавались (`--loss` есть только у UDP): в настоящей "
                   "сети потерянный сегмент TCP ядро переслало бы само, и приложение увидело "
                   "бы задержку, а не потерю.")


# --- Threads or an event loop (notebook section 7) -----------------------------------
SCALE_FIGURE = "threads_vs_event_loop"
SCALE_VARIANTS = ("tcp", "select")
SCENARIO_WORDS = {"fanout": "1 отправитель", "many-senders": "10 отправителей"}


def _scale_point(points, variant, members):
    for point in points:
        if point.get("variant") == variant and point.get("members") == members:
            return point
    return None


def _scale_cells(point, budget):
    """Join (s), broadcast (ms), RSS per member (KB) and threads of one point."""
    if point is None or point.get("status") == "skipped":
        return ["—"] * 4
    join = (f"> {ru.seconds(budget)}" if point.get("status") == "budget"
            else ru.decimal(point.get("join_s"), 2))
    broadcast = point.get("broadcast_s")
    return [join, ru.decimal(broadcast * 1000 if broadcast is not None else None, 1),
            kb(point.get("rss_per_member_kb")), ru.integer(point.get("threads"))]


def _stopped(points, variant):
    """The first point of ``variant`` that is not "ok" (or None)."""
    for point in sorted(points, key=lambda point: point.get("members") or 0):
        if point.get("variant") == variant and point.get("status") in ("budget", "error"):
            return point
    return None


def _scale_text(points):
    sizes = sorted({point.get("members") for point in points})
    both = [n for n in sizes if all((_scale_point(points, v, n) or {}).get("status") == "ok"
                                    for v in SCALE_VARIANTS)]
    if not both:
        return []
    n = both[-1]
    tcp, sel = (_scale_point(points, v, n) for v in SCALE_VARIANTS)
    said = [
        f"При {ru.count(n, 'участнике', 'участниках', 'участниках')} у сервера с потоком на "
        f"клиента {_threads(tcp['threads'])}, по два на "
        f"участника, у сервера с циклом событий — {ru.integer(sel['threads'])} при любом "
        "числе участников (главный поток ждёт Ctrl+C, второй крутит цикл). Участник стоит "
        f"первому около {kb(tcp['rss_per_member_kb'])} КБ памяти (стеки потоков и их "
        f"объекты), второму — около {kb(sel['rss_per_member_kb'])} КБ (буферы и запись в "
        "словаре); это прирост RSS за вход, делённый на число вошедших, а в подразделе "
        "{{sec:Задержка, вход и память}} — наклон прямой по размерам таблицы "
        "{{tab:meas-sweep}}, поэтому числа там немного другие. "
        f"Вход занял {ru.decimal(tcp['join_s'], 2)} и {ru.decimal(sel['join_s'], 2)} с, "
        f"одна рассылка всем — {ru.decimal(tcp['broadcast_s'] * 1000, 1)} и "
        f"{ru.decimal(sel['broadcast_s'] * 1000, 1)} мс (таблица {{{{tab:meas-scale}}}}). "
        "Вход дорог обоим: о каждом новичке сервер сообщает всем, кто уже в чате, это "
        f"N·(N−1)/2 = {ru.integer(tcp['notices'])} строк при N = {ru.integer(n)}. Но у "
        "сервера с потоками каждое такое уведомление будит поток отправки получателя, и "
        "около тысячи потоков отправки по очереди берут процессор и GIL, а цикл событий "
        "сам пишет в готовые сокеты."]
    stops = [(name, _stopped(points, variant)) for variant, name in (
        ("tcp", "сервер с потоком на клиента"), ("select", "сервер с циклом событий"))]
    stops = [f"{name} — на {ru.integer(stop['members'])} ({stop['reason']})"
             for name, stop in stops if stop]
    if stops:
        said[0] += (" Где каждый остановился: " + "; ".join(stops)
                    + ". Большие размеры для остановившегося не запускались.")
    return said


def _scale_load(data):
    """A sentence on the machine's load during table 14's runs ("" if unknown)."""
    loads = [run.get("load_1min") for run in data.scale.get("runs") or []
             if isinstance(run, dict) and run.get("load_1min") is not None]
    if not loads:
        return ""
    return (" Серия сама нагружает машину (тысячи потоков сервера входят в среднюю "
            "загрузку): во время замеров таблицы {{tab:meas-scale100}} она была от "
            f"{ru.decimal(min(loads), 1)} до {ru.decimal(max(loads), 1)}.")


def event_loop(data):
    """Thread per client against one thread with an event loop: the scale series
    and the two designs at 100 members (``timing.json`` → ``scale``)."""
    points = [p for p in data.scale.get("points") or [] if isinstance(p, dict)]
    if not points:
        return ""
    budget = data.scale.get("join_budget_s") or 0
    rows = [[ru.integer(n), variant] + _scale_cells(_scale_point(points, variant, n), budget)
            for n in sorted({p.get("members") for p in points}) for variant in SCALE_VARIANTS]
    header = ["участников", "сервер", "вход, с", "рассылка, мс", "КБ на участника", "потоков"]
    out = ["### Потоки или цикл событий",
           "Тот же протокол (`chat_common`) обслуживают два сервера TCP: `tcp_chat/server.py` "
           "с двумя потоками на участника и `tcp_chat/select_server.py` с одним потоком и "
           "циклом событий (подраздел {{sec:Сервер TCP на цикле событий}}). Серия масштаба "
           "(`python -m benchmarks.scale`; графики — в разделе 7 блокнота 03) для каждого "
           "числа участников N запускает свежий сервер, подключает N участников и "
           "отправляет одно сообщение всем (таблица {{tab:meas-scale}}). На вход в одной "
           f"точке отведено {ru.seconds(budget)} с; не уложился — в таблице «>», и большие "
           "N для этого сервера не запускаются.",
           "Таблица {{tab:meas-scale}} — Серия масштаба: tcp — поток на клиента, select — "
           "цикл событий\n\n" + _table(header, rows, "rlrrrr")]
    out += _scale_text(points)
    at_100 = data.scale.get("at_100") or {}
    rows = []
    for key, run in sorted(at_100.items(), key=lambda item: (item[0].partition("/")[0],
                                                            _rank(item[0].partition("/")[2]))):
        scenario, _, variant = key.partition("/")
        rows.append([SCENARIO_WORDS.get(scenario, scenario), variant, _delivered(run),
                     per_s(run.get("deliveries_per_s")), ru.decimal(run.get("latency_p99_ms"), 1),
                     ru.decimal(run.get("server_peak_rss_mb"), 1)])
    if rows:
        out.append("Таблица {{tab:meas-scale100}} — Два сервера TCP при 100 участниках без паузы "
                   "между сообщениями (из трёх запусков — с медианной пропускной "
                   "способностью)\n\n"
                   + _table(["нагрузка", "сервер", "доставлено", "доставок в секунду",
                             "p99, мс", "память, МБ"], rows, "llrrrr"))
        lossless = all(run.get("lost") == 0 for run in at_100.values())
        ratios = []
        for scenario in SCENARIO_WORDS:
            tcp, sel = at_100.get(f"{scenario}/tcp"), at_100.get(f"{scenario}/select")
            if tcp and sel and tcp.get("deliveries_per_s") and sel.get("deliveries_per_s"):
                ratios.append(ru.decimal(sel["deliveries_per_s"] / tcp["deliveries_per_s"], 2))
        out.append("При ста участниках "
                   + ("оба варианта сервера доставили всё" if lossless
                      else "потери есть и здесь")
                   + (f"; сервер с циклом событий дал {' и '.join(ratios)} от доставок в "
                      "секунду многопоточного" if ratios else "")
                   + " (таблица {{tab:meas-scale100}}): поток на клиента — самое понятное "
                   "устройство, и учебному чату его хватает. Тысячи участников упираются в "
                   "потоки — память, переключения и GIL; цикл событий держит их в одном "
                   "потоке, но его код сложнее: неблокирующие сокеты, свой буфер отправки и "
                   "запись только в готовый сокет. Дальше обоих останавливает сам протокол: "
                   "объявление каждого входа всем растёт как N²." + _scale_load(data))
    return "\n\n".join(out)


LEFT_TO_NOTEBOOKS = {"join_time", "memory_per_member", "throughput", SCALE_FIGURE, PING_FIGURE}
"""Plots that only repeat a table of this section (time to join, memory
against members, throughput, the scale series, the pinger's loss): the report
gives the table, the notebooks the plot (the body of a lab report has 25 pages)."""


def other_figures(data):
    """Plots in ``report/figures/`` that no subsection showed."""
    stems = [stem for stem in data.captions if data.has_figure(stem)]
    stems += [png.stem for png in data.pngs if png.stem not in data.captions]
    shown = [data.figure(stem) for stem in stems if stem not in data.claimed]
    shown = [figure for figure in shown if figure]
    if not shown:
        return ""
    return "### Другие графики\n\n" + "\n\n".join(shown)


SUBSECTIONS = [method, latency, throughput, naive, udp_loss, ping, event_loop, other_figures]
"""The subsections, in order (``other_figures`` stays last)."""


# --- The section, the conclusions and the facts other sections quote ---------------------
def section(figures, report):
    """Markdown of the section from the files in ``figures`` (Path);
    image paths relative to ``report`` (the folder of report.md)."""
    data = Data(figures, report)
    if not data.pngs:
        return PLACEHOLDER
    parts = [subsection(data) for subsection in SUBSECTIONS]
    return "\n\n".join(part for part in parts if part)


NO_CONCLUSIONS = ("Замеры производительности ещё не выполнены (раздел {{sec:Результаты "
                  "измерений}}), поэтому выводов о ней нет.")


def conclusions(figures):
    """The item of the conclusions drawn from the measurements (text after "6. ")."""
    data = Data(figures, figures)
    if not data.summary:
        return NO_CONCLUSIONS
    said = []
    members = data.summary.get("members") or []
    big = max(members) if members else None
    tcp_big, udp_big = data.point(data.sweep, "tcp", big), data.point(data.sweep, "udp", big)
    if tcp_big and udp_big:
        said.append(f"при {big} участниках медиана задержки — {ms(tcp_big['latency_p50_ms'])} мс "
                    f"у TCP и {ms(udp_big['latency_p50_ms'])} мс у UDP")
    memory = data.summary.get("memory_kb_per_member") or {}
    if memory.get("tcp") is not None and memory.get("udp") is not None:
        said.append(f"участник стоит серверу около {kb(memory['tcp'])} КБ памяти у TCP "
                    f"(два потока) и около {kb(memory['udp'])} КБ у UDP")
    lossless = lossless_rate(data.loss)
    if lossless:
        said.append(f"UDP доставлял всё лишь до {_up_to(lossless)} в секунду, а "
                    "дальше молча терял сообщения")
    tcp_runs = [run for run in data.runs if run.get("variant") == "tcp"]
    if tcp_runs and not any(run.get("lost") for run in tcp_runs):
        said.append("TCP не потерял ни одной доставки")
    scale = _scale_summary(data)
    if scale:
        said.append(scale)
    if not said:
        return NO_CONCLUSIONS
    return ("Замеры (раздел {{sec:Результаты измерений}}) показали цену надёжности: "
            + "; ".join(said) + ". TCP платит памятью, потоками и более долгим входом за "
            "доставку всего и по порядку, UDP легче для сервера, но при перегрузке теряет "
            "сообщения.")


def _threads(count):
    """``2 002 потока``; the count is None where the OS does not tell it."""
    return "потоков: —" if count is None else ru.count(count, "поток", "потока", "потоков")


def _scale_summary(data):
    """One clause on the scale series: both designs at the largest N both
    joined, then how far the event loop went ("" if the series was not run)."""
    points = [p for p in data.scale.get("points") or [] if isinstance(p, dict)]
    ok = {(p.get("variant"), p.get("members")): p for p in points if p.get("status") == "ok"}
    both = [n for (variant, n) in ok if variant == "tcp" and ("select", n) in ok]
    if not both:
        return ""
    n = max(both)
    tcp, sel = ok["tcp", n], ok["select", n]
    text = (f"в серии масштаба при {ru.count(n, 'участнике', 'участниках', 'участниках')} "
            f"вход занял {ru.decimal(tcp['join_s'], 2)} с у сервера TCP с потоком на клиента "
            f"({_threads(tcp['threads'])}) и "
            f"{ru.decimal(sel['join_s'], 2)} с у сервера с циклом событий "
            f"({_threads(sel['threads'])})")
    further = max(m for (variant, m) in ok if variant == "select")
    if further > n:
        text += (f"; цикл событий принял и "
                 f"{ru.count(further, 'участника', 'участников', 'участников')} — за "
                 f"{ru.decimal(ok['select', further]['join_s'], 2)} с")
    return text + " (таблица {{tab:meas-scale}})"


FACT_KEYS = ("naive_order", "naive_corrupt")
"""Sentences about the measurements that other sections quote (``{{meas:KEY}}``)."""


def facts(figures):
    """``{key: sentence}`` for :data:`FACT_KEYS` that the saved data supports."""
    data = Data(figures, figures)
    found = {}
    wrong = data.summary.get("naive_wrong") or {}
    many = (wrong.get("naive") or {}).get("many-senders")
    many_ours = (wrong.get("tcp") or {}).get("many-senders")
    if many and many_ours:
        found["naive_order"] = (
            "В замере с десятью отправителями у наивного сервера без блокировки порядок "
            "сообщений разошёлся у "
            + ru.count(many.get('order_mismatch_members') or 0, 'участника', 'участников',
                       'участников')
            + f", у нашего — у {ru.integer(many_ours.get('order_mismatch_members') or 0)}"
            " (таблица {{tab:meas-naive}}).")
        found["naive_corrupt"] = (
            "Наивный сервер, который пересылает куски `recv()` без кадрирования, в замере с "
            "десятью отправителями испортил "
            f"{ru.count(many.get('corrupt') or 0, 'сообщение', 'сообщения', 'сообщений')} "
            "(таблица {{tab:meas-naive}}).")
    return found
