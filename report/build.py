"""Build the lab report: ``python -m report.build [--no-pdf] [--skip-tests]``.

One command brings everything in ``report/`` up to date with the code:

1. draws the diagrams (``report/diagrams/*.png``, :mod:`report.diagrams`);
2. collects the test suite (``pytest --collect-only -q``) and runs it,
   except ``tests/test_report.py`` (it checks this very build), and stores
   the counts and the result in ``report/test_run.json``;
3. writes ``report/report.md`` from ``report/template.md``: listings read
   from the source files, transcripts of real sessions (:mod:`report.demo`),
   the test section from ``report/test_run.json``, the measurements from what
   ``notebooks/03_timing.ipynb`` saved in ``report/figures/``;
4. renders ``report/report.pdf`` (Python-Markdown, then WeasyPrint;
   :mod:`report.pdf`).

Step 3 is deterministic: the same code, ``test_run.json`` and figures give
the same ``report.md`` byte for byte.  ``tests/test_report.py`` relies on
that and fails when ``report.md`` is stale.
"""

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from chat_common import config
from chat_common import protocol
from report import ru

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "report"
TEMPLATE = REPORT / "template.md"
MARKDOWN = REPORT / "report.md"
PDF = REPORT / "report.pdf"
TEST_RUN = REPORT / "test_run.json"
DIAGRAMS = REPORT / "diagrams"
FIGURES = REPORT / "figures"

GENERATED_NOTE = (
    "<!-- Этот файл собран командой `python -m report.build` из report/template.md, "
    "кода программы и настоящих прогонов. Не правьте его вручную: правьте шаблон "
    "или код и соберите отчёт заново. -->\n\n"
)

SELF_TEST = "tests/test_report.py"
"""The test of this build: collected and counted, but not run by the build
(it compares report.md with what the build makes, so it cannot pass before
the build has finished)."""

TEST_TIMEOUT = 1800
"""Seconds the whole test run of the build may take."""

APPENDICES = [
    ("А", "tcp_chat", "Листинги программы TCP"),
    ("Б", "udp_chat", "Листинги программы UDP"),
    ("В", "chat_common", "Листинги общих модулей"),
]
"""The lettered appendices of the listings: (letter, package, title), in order."""

PACKAGES = [package for _, package, _ in APPENDICES]
DEMO_APPENDIX = ("Г", "Терминалы участников демонстрации")
"""The appendix after the listings: (letter, title)."""
FIRST_FILES = ["tcp_chat/server.py", "tcp_chat/client.py", "tcp_chat/select_server.py",
               "udp_chat/server.py", "udp_chat/client.py",
               "chat_common/config.py", "chat_common/protocol.py", "chat_common/text.py",
               "chat_common/framing.py", "chat_common/base_server.py",
               "chat_common/cli.py", "chat_common/console.py", "chat_common/pinger.py",
               "chat_common/loss.py"]
"""Order of the listings inside each appendix; other non-empty modules of a
package follow its listed ones, sorted."""

FILE_ROLES = {
    "chat_common/config.py": "все настройки по умолчанию: адрес, порты, лимиты, тайм-ауты",
    "chat_common/protocol.py": "правила чата без ввода-вывода: вход новичка, имена, "
                               "проверка текста, команды, кто что получает",
    "chat_common/text.py": "какой текст принимает чат: проверка сообщений и имён, "
                           "числа и списки по-русски",
    "chat_common/framing.py": "разбор потока байтов TCP на строки",
    "chat_common/pinger.py": "пингер обоих клиентов: команда `/ping N`, время ответа и потери",
    "chat_common/loss.py": "искусственные потери датаграмм для опытов: флаги `--loss` и `--seed`",
    "tcp_chat/select_server.py": "сервер TCP с циклом событий (`selectors`): один поток на всех",
    "chat_common/base_server.py": "общее у серверов TCP и UDP: комната под одной блокировкой, "
                                  "поток сервера, запуск и остановка",
    "chat_common/cli.py": "командная строка всех программ и запуск сервера до Ctrl+C",
    "chat_common/console.py": "терминал клиента, общий для TCP и UDP",
    "tcp_chat/server.py": "многопоточный сервер TCP",
    "tcp_chat/client.py": "клиент TCP: поток приёма и главный поток ввода",
    "udp_chat/server.py": "однопоточный сервер UDP с удалением молчащих участников",
    "udp_chat/client.py": "клиент UDP: поток приёма, поток сигналов присутствия, "
                          "главный поток ввода",
}

TEST_ROLES = {
    "tests/test_protocol.py": "правила чата без сокетов: разбор потока на строки (куски, "
                              "по байту, разрезанная буква UTF-8), текст, имена, команды",
    "tests/test_tcp_server.py": "сервер TCP на настоящих сокетах, правило за правилом: имя и "
                                "тайм-аут, рассылка, команды, плохие байты, порядок, "
                                "медленный читатель, пределы, остановка",
    "tests/test_tcp_cli.py": "программы TCP как процессы: сигналы, флаги, занятый порт, "
                             "справка, ввод из канала, клиент вроде `nc`",
    "tests/test_tcp_outbox.py": "очередь отправки `Outbox`: пределы в строках и байтах, "
                                "досылка при закрытии, порядок",
    "tests/test_tcp_concurrency.py": "десятки клиентов сразу: каждое сообщение доходит до "
                                     "каждого ровно один раз и в одном порядке",
    "tests/test_udp_server.py": "сервер UDP: `/join`, команды, плохие датаграммы, ответ "
                                "постороннему адресу, сигналы присутствия",
    "tests/test_text.py": "правила текста: невидимые символы и смена направления, "
                          "имена-двойники, склонение числительных, списки",
    "tests/test_hardening.py": "защита от злоупотреблений: тысячи `/users` в одном `recv`, "
                               "серия неверных имён, пределы участников и ответов",
    "tests/test_udp_loss.py": "искусственные потери по зерну, повтор `/join` с удвоением "
                              "ожидания, отказ после тайм-аута",
    "tests/test_pinger.py": "пингер: ответы `*** pong`, потери, итоги, `/ping` в клиентах "
                            "TCP и UDP",
    "tests/test_console.py": "терминал клиента: перерисовка приглашения, команда `/ping`",
    "tests/test_udp_cli.py": "программы UDP как процессы: ввод из канала, недоступный "
                             "сервер, остановка по сигналу",
    "tests/test_notebooks.py": "блокноты `notebooks/*.ipynb` выполняются целиком без ошибок",
    "tests/test_benchmarks.py": "стенд замеров `benchmarks/` на малых прогонах: все варианты "
                                "серверов, подсчёт доставленного, командная строка",
    "tests/test_report.py": "отчёт не устарел: `report.md` совпадает со сборкой из текущего "
                            "кода, приложения на месте, PDF есть",
}

CONFIG_ROLES = {
    "HOST": "адрес сервера по умолчанию",
    "TCP_PORT": "порт сервера TCP",
    "UDP_PORT": "порт сервера UDP",
    "ENCODING": "кодировка строк",
    "MAX_MESSAGE_BYTES": "наибольшая длина сообщения, байт",
    "MAX_NAME_CHARS": "наибольшая длина имени, символов",
    "NAME_TIMEOUT": "время на выбор имени (TCP), с",
    "SEND_QUEUE_LIMIT": "строк в очереди отправки одного участника (TCP)",
    "SEND_QUEUE_BYTES": "байт в очереди отправки одного участника (TCP)",
    "MAX_CLIENTS": "наибольшее число подключений (TCP)",
    "BACKLOG": "очередь ещё не принятых подключений (TCP)",
    "SHUTDOWN_FLUSH_TIMEOUT": "время на досылку очередей при остановке, с",
    "HEARTBEAT_INTERVAL": "период сигнала присутствия `/ping` (UDP), с",
    "CLIENT_TIMEOUT": "тишина, после которой участник удаляется (UDP), с",
    "JOIN_TIMEOUT": "ожидание ответа на `/join` (UDP), с",
    "MAX_FIRST_REPLY_BYTES": "наибольший ответ на первую датаграмму адреса (ошибка или приветствие), байт",
    "MAX_MEMBERS": "наибольшее число участников чата UDP",
    "MAX_REPLY_BYTES": "наибольшая строка со списком имён (приветствие, /users, уходы), байт",
    "MAX_NAME_ATTEMPTS": "неверных имён подряд, после которых соединение TCP закрывается",
    "CLOSE_WAIT_TIMEOUT": "ожидание ответа на `/quit` клиентом, с",
}


class BuildError(RuntimeError):
    """Something the build needs is missing or broken."""


# --- Small helpers -------------------------------------------------------------
def rel(path):
    """``path`` relative to the project root, with forward slashes (str)."""
    return Path(path).resolve().relative_to(ROOT).as_posix()


def fence(text, lang=""):
    """``text`` as a fenced code block whose fence no line of it can close."""
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=2)
    marks = "`" * (longest + 1)
    return f"{marks}{lang}\n{text.rstrip()}\n{marks}"


def md_cell(text):
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header, rows, align=None):
    """A Markdown table; ``align``: string of ``l``/``r``/``c``, one per column."""
    align = align or "l" * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(md_cell(c) for c in row) + " |")
    return "\n".join(lines)


def number(value):
    """A setting or count as the report writes it: thousands apart for an
    ``int`` (:func:`report.ru.integer`), a decimal comma for a ``float``."""
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, int):
        return ru.integer(value)
    if isinstance(value, float):
        return ru.seconds(value)
    return str(value)


def slug(text):
    """The anchor GitHub (and the PDF, through Python-Markdown) gives a heading."""
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def toc_slug(value, separator="-"):
    """Python-Markdown's ``toc`` slugify, made to match :func:`slug`."""
    return slug(value)


def module_docstring(path):
    """First paragraph of a module's docstring ("" if none)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return ""
    doc = ast.get_docstring(tree) or ""
    return doc.split("\n\n")[0].replace("\n", " ").strip()


# --- Listings -------------------------------------------------------------------
def listing_files():
    """Source files of the kit in listing order (list of paths relative to ROOT):
    appendix by appendix, in each the files of :data:`FIRST_FILES` first."""
    ordered = []
    for package in PACKAGES:
        found = [rel(path) for path in sorted((ROOT / package).glob("*.py"))
                 if path.read_text(encoding="utf-8").strip()]
        ordered += [name for name in FIRST_FILES if name in found]
        ordered += [name for name in found if name not in FIRST_FILES]
    return ordered


def listing_numbers():
    """``{path: "А.1"}``: the number of each file's listing, appendix letter first."""
    letters = {package: letter for letter, package, _ in APPENDICES}
    numbers, counts = {}, {}
    for name in listing_files():
        letter = letters[name.split("/")[0]]
        counts[letter] = counts.get(letter, 0) + 1
        numbers[name] = f"{letter}.{counts[letter]}"
    return numbers


def appendix_heading(letter, title):
    return f"ПРИЛОЖЕНИЕ {letter} — {title}"


def count_lines(path):
    return len((ROOT / path).read_text(encoding="utf-8").splitlines())


def lines_of(path):
    """``"250 строк"``: the length of a file, as the report writes it."""
    return ru.count(count_lines(path), "строка", "строки", "строк")


def code_size_table():
    """The files of the program: their length and where their listing is."""
    rows = []
    total = 0
    numbers = listing_numbers()
    for name in listing_files():
        lines = count_lines(name)
        total += lines
        rows.append([f"`{name}`", ru.integer(lines), numbers[name]])
    rows.append(["**всего**", f"**{ru.integer(total)}**", ""])
    return ("Таблица {{tab:code}} — Файлы программы: длина и листинг в приложениях "
            "(назначение каждого файла — в подписи его листинга)\n\n"
            + table(["файл", "строк", "листинг"], rows, "lrl"))


def appendices():
    """The appendices А, Б, В: the whole text of every file, read from the file."""
    numbers = listing_numbers()
    parts = []
    for letter, package, title in APPENDICES:
        files = [name for name in listing_files() if name.split("/")[0] == package]
        out = [f"## {appendix_heading(letter, title)}",
               f"Полный текст {'файла' if len(files) == 1 else 'файлов'} пакета `{package}` "
               "на момент сборки отчёта; сборка читает его прямо из файлов."]
        if package == "chat_common":
            out.append("Значения по умолчанию из `chat_common/config.py` (листинг "
                       f"{numbers['chat_common/config.py']}) собраны в таблице "
                       "{{tab:config}}; флаги командной строки меняют их для одного запуска.")
            out.append(config_table())
        for name in files:
            role = FILE_ROLES.get(name) or module_docstring(ROOT / name) or "Модуль"
            out.append(f"Листинг {numbers[name]} — {role[0].upper() + role[1:]} "
                       f"(`{name}`, {lines_of(name)})\n\n"
                       + fence((ROOT / name).read_text(encoding="utf-8"), "python"))
        parts.append("\n\n".join(out))
    return "\n\n".join(parts)


def see_listing(name):
    """``"приложение А, листинг А.1"``: where the listing of ``name`` is."""
    number_ = listing_numbers().get(name)
    if number_ is None:
        raise BuildError(f"{{{{see:{name}}}}} в {rel(TEMPLATE)}: такого файла в листингах нет")
    return f"приложение {number_.split('.')[0]}, листинг {number_}"


def config_table():
    rows = []
    for name, value in vars(config).items():
        if not name.isupper():
            continue
        if name.endswith("PORT"):
            shown = str(value)  # a port is a name, not a quantity: never grouped
        else:
            shown = number(value)
        rows.append([f"`{name}`", shown, CONFIG_ROLES.get(name, "—")])
    return "Таблица {{tab:config}} — Настройки из `chat_common/config.py`\n\n" + table(
        ["имя", "значение", "смысл"], rows, "lrl")


# --- Demonstration ------------------------------------------------------------------
def demo_section(sessions):
    """Markdown of the demonstration in the body (``sessions`` from
    :func:`report.demo.run_all`): the script, as one table when both variants
    say the same after the welcome (what :func:`demo_conclusion` says), else a
    table per variant; then the first TCP user's terminal.  The other
    terminals are in appendix Г (:func:`demo_appendix`).
    """
    tcp, udp = sessions["TCP"], sessions["UDP"]
    out = []
    if _same_after_welcome(sessions):
        rows = []
        for index, ((who, sent, note), (_, udp_sent, _)) in enumerate(
                zip(tcp.steps, udp.steps), start=1):
            shown_sent = f"`{sent}`" if udp_sent == sent else f"`{sent}` (UDP: `{udp_sent}`)"
            rows.append([index, who, shown_sent, note])
        out.append("Таблица {{tab:demo}} — Сценарий сеансов TCP и UDP: кто что отправил, "
                   "по порядку\n\n" + table(["шаг", "кто", "отправлено", "зачем"], rows, "rlll"))
    else:
        for variant, session in sessions.items():
            rows = [[i, who, f"`{text}`", note] for i, (who, text, note)
                    in enumerate(session.steps, start=1)]
            out.append(f"Таблица {{{{tab:demo-{variant}}}}} — Сценарий сеанса {variant}: "
                       "кто что отправил, по порядку\n\n"
                       + table(["шаг", "кто", "отправлено", "зачем"], rows, "rlll"))
    # The first user's terminal (she sees the whole session) stays in the body;
    # the others go to appendix Г: the body of a lab report stays within 25 pages.
    first = tcp.users[0]
    out.append(f"Терминал участника «{first}» (TCP):\n\n"
               + fence("\n".join(tcp.seen[first]), "text"))
    out.append(f"Терминалы остальных участников — в приложении {DEMO_APPENDIX[0]}.")
    return "\n\n".join(out)


def demo_appendix(sessions):
    """Appendix Г: the terminals of the demonstration not shown in the body."""
    tcp = sessions["TCP"]
    shown = {"TCP": tcp} if _same_after_welcome(sessions) else sessions
    out = [f"## {appendix_heading(*DEMO_APPENDIX)}",
           "Терминалы участников сеансов раздела {{sec:Демонстрация работы}}, кроме "
           f"терминала «{tcp.users[0]}» (TCP), показанного там."]
    blocks = [(f"Терминал участника «{user}», {variant}", session.seen[user])
              for variant, session in shown.items() for user in session.users
              if (variant, user) != ("TCP", tcp.users[0])]
    blocks += [(f"{title}, {session.variant}", lines)
               for session in sessions.values() for title, lines in session.extra]
    letter = DEMO_APPENDIX[0]
    out += [f"Листинг {letter}.{index} — {title}\n\n" + fence("\n".join(lines), "text")
            for index, (title, lines) in enumerate(blocks, start=1)]
    return "\n\n".join(out)


# --- Tests -------------------------------------------------------------------------
def _pytest(args, timeout):
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def collect_counts(timeout=300):
    """Tests per file as ``pytest --collect-only -q`` sees them now (dict)."""
    result = _pytest(["--collect-only", "-q", "-p", "no:cacheprovider"], timeout)
    counts = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^([^\s:]+\.py)::", line)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    if result.returncode != 0 or not counts:
        raise BuildError("pytest --collect-only не сработал:\n"
                         + result.stdout[-3000:] + result.stderr[-3000:])
    return dict(sorted(counts.items()))


def run_tests():
    """Run the suite except :data:`SELF_TEST`; return the dict for test_run.json."""
    import platform

    import pytest

    collected = collect_counts()
    with tempfile.TemporaryDirectory() as folder:
        xml_path = Path(folder) / "junit.xml"
        args = ["-q", "-p", "no:cacheprovider", f"--ignore={SELF_TEST}",
                f"--junitxml={xml_path}", "-o", "junit_family=xunit1"]
        started = time.monotonic()
        result = _pytest(args, TEST_TIMEOUT)
        seconds = time.monotonic() - started
        if not xml_path.exists():
            raise BuildError("pytest не записал результаты:\n"
                             + result.stdout[-3000:] + result.stderr[-3000:])
        tree = ElementTree.parse(xml_path)
    files = {}
    failures, skipped = [], []
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for case in tree.iter("testcase"):
        path = case.get("file") or ""
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped" and outcome == "passed":
                outcome = "skipped"
        counts = files.setdefault(path, {"passed": 0, "failed": 0, "skipped": 0})
        counts[outcome] += 1
        totals[outcome] += 1
        if outcome == "skipped":
            skipped.append(case.get("name"))
        if outcome == "failed":
            classname = case.get("classname", "")
            failures.append(f"{path}::{case.get('name')}" if path else
                            f"{classname}::{case.get('name')}")
    summary = [line for line in result.stdout.splitlines() if line.strip()]
    return {
        "command": f"python -m pytest --ignore={SELF_TEST}",
        "collected": collected,
        "collected_total": sum(collected.values()),
        "run": {
            **totals,
            "total": sum(totals.values()),
            "seconds": round(seconds, 1),
            "exit_code": result.returncode,
            "files": dict(sorted(files.items())),
            "failures": sorted(failures),
            "skipped_tests": sorted(skipped),
            "summary": summary[-1] if summary else "",
        },
        "environment": {
            "python": platform.python_version(),
            "pytest": pytest.__version__,
            "system": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
        },
    }


def load_test_run():
    """The stored test run (dict) or None."""
    try:
        return json.loads(TEST_RUN.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


SKIP_REASONS = {
    "test_telnet": "на машине нет программы telnet, а тест запускает настоящую",
    "test_scale_series": "система не сообщает число потоков процесса",
}
"""Why a test may be skipped, by the start of its name (pytest's reasons are
written for developers, in English)."""


def skip_reason(name):
    """The Russian reason a skipped test ``name`` gives in the report."""
    for start, reason in SKIP_REASONS.items():
        if name.startswith(start):
            return reason
    return "условие теста не выполняется на этой машине"


def tests_section(run):
    if run is None:
        return ("Набор тестов ещё не запускался сборкой отчёта: выполните "
                "`python -m report.build`, и здесь появятся его результаты.")
    collected = run["collected"]
    files = run["run"]["files"]
    rows = []
    for path, count in collected.items():
        got = files.get(path)
        if got is None:  # the report's own test, or a file added after the run
            result = "—"
        else:
            result = " / ".join(ru.integer(got[key]) for key in ("passed", "failed", "skipped"))
        role = TEST_ROLES.get(path) or module_docstring(ROOT / path) or "—"
        rows.append([f"`{path.removeprefix('tests/')}`", role, ru.integer(count), result])
    total = run["collected_total"]
    r = run["run"]
    totals = " / ".join(ru.integer(r[key]) for key in ("passed", "failed", "skipped"))
    rows.append(["**всего**", "", f"**{ru.integer(total)}**", f"**{totals}**"])
    env = run["environment"]
    out = [
        f"Набор тестов (pytest и pytest-timeout) насчитывает **{ru.integer(total)}** "
        f"{ru.noun(total, 'тест', 'теста', 'тестов')} в "
        f"{ru.count(len(collected), 'файле', 'файлах', 'файлах')} "
        f"(таблица {{{{tab:tests}}}}; число тестов в каждом файле взято из "
        "`python -m pytest --collect-only -q`). "
        "Все тесты работают с настоящими сокетами на 127.0.0.1 и портами, которые "
        "выбирает система, поэтому не мешают запущенному вручную чату. "
        "Каждое ожидание в тестах ограничено по времени, а pytest-timeout "
        "прерывает зависший тест.",
        "Таблица {{tab:tests}} — Что проверяют тесты (файлы в папке `tests/`; результат "
        "прогона: пройдено / не пройдено / пропущено)\n\n"
        + table(["файл", "что проверяется", "тестов", "результат"], rows, "llrr"),
    ]
    status = (f"Прогон выполнила сборка отчёта командой `{run['command']}` (Python "
              f"{env['python']}, pytest {env['pytest']}, {env['system']}, процессоров: "
              f"{env['cpus']}) за {ru.count(round(r['seconds']), 'секунду', 'секунды', 'секунд')}: "
              f"пройдено — {ru.integer(r['passed'])}, не пройдено — {ru.integer(r['failed'])}, "
              f"пропущено — {ru.integer(r['skipped'])}.")
    if r["failed"]:
        shown = r["failures"][:30]
        status += " Не прошли:\n\n" + "\n".join(f"- `{name}`" for name in shown) \
            + ("\n- …" if len(r["failures"]) > len(shown) else "")
    elif r["total"]:
        status += " Все запущенные тесты пройдены."
    skipped = r.get("skipped_tests") or []
    if skipped:
        status += " Пропущены: " + "; ".join(
            f"`{name}` — {skip_reason(name)}" for name in skipped) + "."
    out.append(status)
    out.append(f"Файл `{SELF_TEST}` проверяет сам отчёт, поэтому сборка его не запускает; "
               "он выполняется при обычном `python -m pytest` вместе с остальными.")
    return "\n\n".join(out)


def _after_welcome(lines):
    """What a user saw from the welcome line on (joining differs by transport)."""
    for index, line in enumerate(lines):
        if line.startswith(protocol.WELCOME_PREFIX):
            return lines[index:]
    return lines


def _same_after_welcome(sessions):
    """Whether both variants played the same script and showed the same lines
    after each user's welcome."""
    tcp, udp = sessions["TCP"], sessions["UDP"]
    return len(tcp.steps) == len(udp.steps) and tcp.users == udp.users and all(
        _after_welcome(tcp.seen[user]) == _after_welcome(udp.seen[user]) for user in tcp.users)


def demo_conclusion(sessions):
    """A sentence comparing the TCP and UDP transcripts, true to what they show."""
    same = _same_after_welcome(sessions)
    if same:
        return ("Терминалы UDP не повторены: после входа они совпадают с терминалами TCP "
                "строка в строку — правила чата общие (`ChatRoom`).\n\nОтличается лишь "
                "вход: по TCP сервер сам присылает приглашение и принимает имя первой "
                "строкой, по UDP клиент отправляет датаграмму `/join ИМЯ` (таблица "
                "{{tab:demo}}) и приглашения не получает.")
    return ("Сеансы TCP и UDP после входа в чат различаются (см. выше), хотя правила "
            "чата у вариантов общие (`ChatRoom`): различия вносит транспорт.")


# --- Measurements --------------------------------------------------------------------
def measurements_section():
    from report import measurements

    return measurements.section(FIGURES, REPORT)


def measurement_conclusions():
    from report import measurements

    return measurements.conclusions(FIGURES)


def measurement_fact(key):
    """``{{meas:key}}``: a sentence of :func:`report.measurements.facts` ("" without data)."""
    from report import measurements

    facts = measurements.facts(FIGURES)
    if key not in measurements.FACT_KEYS:
        raise BuildError(f"{{{{meas:{key}}}}} в {rel(TEMPLATE)}: нет такого факта замеров "
                         f"(есть: {', '.join(measurements.FACT_KEYS)})")
    return facts.get(key, "")


# --- Lines of the chat quoted by the report ---------------------------------------------
def tcp_full_line():
    """What the TCP server answers a connection beyond ``MAX_CLIENTS``."""
    return protocol.server_full_line(config.MAX_CLIENTS)


def udp_full_line():
    """What the UDP server answers a ``/join`` beyond ``MAX_MEMBERS``: asked of the rules."""
    room = protocol.ChatRoom(join_command=True, max_members=config.MAX_MEMBERS)
    for index in range(config.MAX_MEMBERS):
        room.join(index, f"u{index}")
    try:
        room.join("one more", "u")
    except protocol.NameRefused as error:
        return protocol.error_line(str(error))
    raise BuildError("сервер UDP не отказал участнику сверх MAX_MEMBERS")


# --- Assembling the document ------------------------------------------------------------
def _lines_outside_code(text):
    """``(line, in_code)`` for each line of ``text``; fence lines count as code."""
    fence_mark = None
    for line in text.splitlines():
        stripped = line.strip()
        match = re.match(r"^(`{3,}|~{3,})", stripped)
        if match:
            mark = match.group(1)
            if fence_mark is None:
                fence_mark = mark
            elif mark.startswith(fence_mark) and stripped == mark:
                fence_mark = None
            yield line, True
            continue
        yield line, fence_mark is not None


def structural(title):
    """Whether a ``##`` heading is a structural element of ГОСТ 7.32, written in
    capitals and not numbered (СОДЕРЖАНИЕ, ЗАКЛЮЧЕНИЕ, ПРИЛОЖЕНИЕ А — …)."""
    head = title.split(" — ")[0]
    return head.isupper()


def number_headings(text):
    """Number the ``##`` sections and their ``###`` subsections as ГОСТ 7.32
    does (``## 3 Краткая теория``, ``### 3.1 Сокеты``), leaving the structural
    elements unnumbered; return ``(text, {title: number})``."""
    numbers = {}
    out = []
    section = subsection = 0
    numbered = False
    for line, in_code in _lines_outside_code(text):
        match = None if in_code else re.match(r"^(#{2,3}) (.+)$", line)
        if match:
            marks, title = match.group(1), match.group(2).strip()
            if len(marks) == 2:
                numbered = not structural(title)
                if numbered:
                    section, subsection = section + 1, 0
                    current = str(section)
            elif numbered:
                subsection += 1
                current = f"{section}.{subsection}"
            if numbered:
                if title in numbers:
                    raise BuildError(f"два раздела с заголовком «{title}»")
                numbers[title] = current
                line = f"{marks} {current} {title}"
        out.append(line)
    return "\n".join(out), numbers


def _sections(text, numbers):
    """Replace ``{{sec:Заголовок}}`` with the number of that section."""
    def replace(match):
        title = match.group(1)
        if title not in numbers:
            raise BuildError(f"{{{{sec:{title}}}}}: нет раздела с таким заголовком")
        return numbers[title]

    return re.sub(r"\{\{sec:([^}]+)\}\}", replace, text)


def _numbering(text):
    """Replace ``{{fig:key}}`` and ``{{tab:key}}`` with numbers: figures and
    tables are numbered in the order of their captions (``Рисунок {{fig:key}} —``,
    ``Таблица {{tab:key}} —``), through the body, and in an appendix with its
    letter (``Таблица В.1``), as ГОСТ 7.32 has it.  A reference to a figure or
    table without a caption is an error."""
    names = {"fig": "Рисунок", "tab": "Таблица"}
    numbers, counts = {}, {}
    appendices = [(match.start(), match.group(1)) for match in
                  re.finditer(r"^## ПРИЛОЖЕНИЕ (\w)\b", text, flags=re.M)]
    for match in re.finditer(r"(?:Рисунок|Таблица) \{\{(fig|tab):([^}]+)\}\} —", text):
        kind, key = match.groups()
        letter = ""
        for start, name in appendices:
            if start < match.start():
                letter = name
        kinds = numbers.setdefault(kind, {})
        if key in kinds:
            raise BuildError(f"две подписи «{names[kind]} {{{{{kind}:{key}}}}}»")
        counts[kind, letter] = counts.get((kind, letter), 0) + 1
        kinds[key] = f"{letter}.{counts[kind, letter]}" if letter else str(counts[kind, letter])

    def replace(match):
        kind, key = match.group(1), match.group(2)
        if key not in numbers.get(kind, {}):
            raise BuildError(f"ссылка на {{{{{kind}:{key}}}}}, а подписи «{names[kind]} "
                             f"{{{{{kind}:{key}}}}} — …» нет")
        return str(numbers[kind][key])

    return re.sub(r"\{\{(fig|tab):([^}]+)\}\}", replace, text)


def _headings(text):
    """``(level, title)`` of the ``##`` and ``###`` headings outside code blocks."""
    found = []
    for line, in_code in _lines_outside_code(text):
        match = None if in_code else re.match(r"^(#{2,3}) (.+)$", line)
        if match:
            found.append((len(match.group(1)), match.group(2).strip()))
    return found


CONTENTS = "СОДЕРЖАНИЕ"


def table_of_contents(text):
    lines = []
    for level, title in _headings(text):
        if title == CONTENTS:
            continue
        indent = "" if level == 2 else "    "
        lines.append(f"{indent}- [{title}](#{slug(title)})")
    return "\n".join(lines)


def generate_markdown(sessions=None, run=None):
    """The whole report.md as ``str``, from the current files.

    ``sessions``: demo sessions (played now if None); ``run``: the test run
    dict (read from report/test_run.json if None).
    """
    from report import demo

    if sessions is None:
        sessions = demo.run_all()
    if run is None:
        run = load_test_run()
    values = {
        "code_sizes": code_size_table,
        "config_table": config_table,
        "appendices": appendices,
        "demo": lambda: demo_section(sessions),
        "demo_appendix": lambda: demo_appendix(sessions),
        "tests": lambda: tests_section(run),
        "measurements": measurements_section,
        "measurement_conclusions": measurement_conclusions,
        "demo_conclusion": lambda: demo_conclusion(sessions),
        "tcp_full_line": tcp_full_line,
        "udp_full_line": udp_full_line,
    }
    text = TEMPLATE.read_text(encoding="utf-8")
    # The template's own comment (how to edit it) gives way to a warning
    # that report.md is generated.
    text = re.sub(r"\A<!--.*?-->\n", GENERATED_NOTE, text, count=1, flags=re.S)

    def replace(match):
        key = match.group(1)
        if key.startswith("cfg."):
            return number(getattr(config, key[4:]))
        if key.startswith("const:"):
            # {{const:package.module.NAME}}: a constant of the chat code.
            module_name, _, name = key[6:].rpartition(".")
            try:
                value = getattr(importlib.import_module(module_name), name)
            except (ImportError, AttributeError) as error:
                raise BuildError(f"{{{{{key}}}}} в {rel(TEMPLATE)}: {error}") from None
            return number(value)
        if key.startswith("see:"):
            return see_listing(key[4:])
        if key.startswith("meas:"):
            return measurement_fact(key[5:])
        if key in values:
            return values[key]()
        if key == "toc":
            return match.group(0)  # filled in last
        raise BuildError(f"неизвестная подстановка {{{{{key}}}}} в {rel(TEMPLATE)}")

    text = re.sub(r"\{\{([a-z_]+|cfg\.[A-Z_]+|const:[a-z_.]+\.[A-Z_]+|see:[a-z_/.]+"
                  r"|meas:[a-z_]+)\}\}", replace, text)
    text, numbers = number_headings(text)
    text = _sections(text, numbers)
    text = _numbering(text)
    text = text.replace("{{toc}}", table_of_contents(text))
    leftover = re.findall(r"\{\{[^}]*\}\}", text)
    if leftover:
        raise BuildError(f"не заменены подстановки: {sorted(set(leftover))}")
    return text.rstrip() + "\n"


# --- Command line ------------------------------------------------------------------
def build_parser():
    from chat_common.cli import make_parser

    parser, options = make_parser(
        "python -m report.build",
        "Собрать отчёт: схемы, прогон тестов, report/report.md и report/report.pdf.",
    )
    options.add_argument("--no-pdf", action="store_true",
                         help="только report.md (и схемы), без PDF")
    options.add_argument("--skip-tests", action="store_true",
                         help="не запускать тесты, взять результаты из report/test_run.json")
    return parser


def _step(title):
    print(f"[report] {title}…", file=sys.stderr, flush=True)
    return time.monotonic()


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    from report import diagrams

    _step("схемы → report/diagrams/")
    diagrams.draw_all(DIAGRAMS)

    run = load_test_run()
    if args.skip_tests:
        if run is None:
            print("[report] report/test_run.json нет: тесты не описаны", file=sys.stderr)
        else:
            # The counts still must be current, or the staleness test fails.
            collected = collect_counts()
            if collected != run["collected"]:
                print("[report] ВНИМАНИЕ: набор тестов изменился с последнего прогона; "
                      "запустите сборку без --skip-tests", file=sys.stderr)
    else:
        t = _step(f"прогон тестов (кроме {SELF_TEST})")
        run = run_tests()
        TEST_RUN.write_text(json.dumps(run, ensure_ascii=False, indent=2) + "\n",
                            encoding="utf-8")
        r = run["run"]
        print(f"[report]   {r['passed']} пройдено, {r['failed']} не пройдено, "
              f"{r['skipped']} пропущено за {time.monotonic() - t:.0f} с", file=sys.stderr)
        if r["failed"]:
            print("[report] ВНИМАНИЕ: не все тесты прошли, отчёт это покажет:\n  "
                  + "\n  ".join(r["failures"][:20]), file=sys.stderr)

    _step("сеансы чата и report/report.md")
    text = generate_markdown(run=run)
    MARKDOWN.write_text(text, encoding="utf-8")

    if not args.no_pdf:
        from report import pdf

        _step("report/report.pdf")
        pdf.render(MARKDOWN, PDF)
    print(f"[report] готово за {time.monotonic() - started:.0f} с", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
