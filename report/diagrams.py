"""Diagrams of the report, drawn with matplotlib into PNG files.

PNG, not Mermaid or another JavaScript-only format: the same picture shows
in a Markdown viewer (GitHub, an IDE) and in the PDF.  The output is
deterministic (no timestamps or software version in the file), so a rebuild
from unchanged code leaves the files byte for byte the same.

Three figures:

* ``architecture.png``: the packages and the threads of every program;
* ``tcp_sequence.png``: a TCP session as a sequence diagram;
* ``udp_sequence.png``: a UDP session as a sequence diagram.
"""

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from chat_common import config  # noqa: E402
from report import ru  # noqa: E402

DPI = 200
SCALE = 0.72
"""Inches per drawing unit.  Text sizes are in points and do not scale, so a
smaller SCALE makes the text larger against the boxes; the figures come out
about 7.5 inches wide, close to the text width of an A4 page (6.7 inches),
so the PDF shrinks them only a little and the labels stay legible."""
FONT = "DejaVu Sans"

# Colours: calm, readable when printed in black and white too.
COMMON = "#e8f0fb"
TCP = "#e6f4e6"
UDP = "#fdf0dc"
THREAD = "#ffffff"
EDGE = "#3a4a5c"
NOTE = "#fffbe6"
LINE = "#2f3b48"
REPLY = "#1f5fa8"
BAD = "#b3261e"


def _figure(width, height):
    fig = plt.figure(figsize=(width * SCALE, height * SCALE))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def fingerprint():
    """What the drawings depend on, as one string: this module's source and
    the configuration values.  Stored in every PNG (a text chunk), so a test
    can tell that the diagrams are stale without drawing them again."""
    source = Path(__file__).read_text(encoding="utf-8")
    values = sorted((name, repr(value)) for name, value in vars(config).items()
                    if name.isupper())
    digest = hashlib.sha256((source + repr(values)).encode("utf-8")).hexdigest()
    return f"report diagrams {digest}"


def _save(fig, path):
    # No time or software version in the file: it depends only on the drawing.
    fig.savefig(path, dpi=DPI, facecolor="white",
                metadata={"Software": None, "Description": fingerprint()})
    plt.close(fig)


def _box(ax, x, y, w, h, text, *, fill=THREAD, size=9, weight="normal", edge=EDGE,
         align="center", style="round,pad=0.02,rounding_size=0.08", lw=1.0, va="center"):
    """A rounded box with its lower left corner at (x, y) and centred text."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=style, facecolor=fill,
                                edgecolor=edge, linewidth=lw))
    if text:
        if align == "center":
            tx = x + w / 2
        else:
            tx = x + 0.12
        ty = y + h / 2 if va == "center" else y + h - 0.12
        ax.text(tx, ty, text, ha=align, va=va, fontsize=size, fontweight=weight,
                family=FONT, color="#111111", linespacing=1.35)


def _arrow(ax, start, end, *, color=LINE, style="-|>", lw=1.2, dashed=False, rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12,
                                 color=color, linewidth=lw,
                                 linestyle=(0, (4, 3)) if dashed else "-",
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))


def _label(ax, x, y, text, *, size=8, color="#333333", ha="center", va="center",
           style="normal", weight="normal", background=None):
    bbox = None
    if background:
        bbox = {"facecolor": background, "edgecolor": "none", "pad": 1.0}
    ax.text(x, y, text, ha=ha, va=va, fontsize=size, family=FONT, color=color,
            fontstyle=style, fontweight=weight, linespacing=1.3, bbox=bbox)


# --- Architecture and threads ------------------------------------------------
def architecture(path):
    """Packages (top), threads of the servers and clients (bottom)."""
    fig, ax = _figure(11.0, 8.15)  # no title: the report's caption names the figure

    # chat_common across the top.
    _box(ax, 0.3, 6.45, 10.4, 1.55, "", fill=COMMON, lw=1.3)
    _label(ax, 0.45, 7.8, "chat_common — общее для TCP и UDP", size=10.5, ha="left",
           weight="bold")
    boxes = [("config.py\nвсе настройки\nпо умолчанию", 1.39),
             ("protocol.py — правила\nбез ввода-вывода:\nChatRoom.receive:\nбайты → Outcome", 2.2),
             ("framing.py\nLineFramer:\nпоток → строки", 1.39),
             ("base_server.py\nкомната под\nблокировкой,\nзапуск, остановка", 1.39),
             ("cli.py\nкомандная\nстрока, Ctrl+C", 1.39),
             ("console.py\nтерминал\nклиента", 1.39)]
    x = 0.55
    for text, width in boxes:
        _box(ax, x, 6.6, width, 1.0, text, size=7.6)
        x += width + 0.15

    # Transports.
    _box(ax, 0.3, 0.3, 5.25, 5.55, "", fill=TCP, lw=1.3)
    _label(ax, 0.45, 5.62, "tcp_chat — транспорт TCP", size=10.5, ha="left", weight="bold")
    _box(ax, 5.75, 0.3, 4.95, 5.55, "", fill=UDP, lw=1.3)
    _label(ax, 5.9, 5.62, "udp_chat — транспорт UDP", size=10.5, ha="left", weight="bold")

    for x in (2.9, 8.2):
        _arrow(ax, (x, 5.85), (x, 6.45), lw=1.4)
    _label(ax, 3.05, 6.15, "импорт", size=8, ha="left", style="italic")
    _label(ax, 8.35, 6.15, "импорт", size=8, ha="left", style="italic")

    # TCP server threads.
    _box(ax, 0.5, 2.35, 4.85, 3.05, "", fill="#f7fbf7")
    _label(ax, 0.62, 5.2, "server.py: ChatServer", size=9.5, ha="left", weight="bold")
    _box(ax, 0.65, 4.35, 1.75, 0.6, "поток accept", size=8.5)
    _box(ax, 2.7, 3.8, 2.5, 1.15,
         "ChatRoom под одной\nблокировкой (lock):\nодин порядок для всех", size=8, fill=COMMON)
    _box(ax, 0.65, 2.5, 2.0, 1.5, "", fill="#ffffff", style="round,pad=0.02,rounding_size=0.05")
    _label(ax, 1.65, 3.82, "на каждого клиента:", size=7.8, style="italic")
    _box(ax, 0.75, 3.15, 1.8, 0.45, "поток приёма", size=8)
    _box(ax, 0.75, 2.6, 1.8, 0.45, "поток отправки", size=8)
    _box(ax, 2.8, 2.55, 2.45, 0.75,
         "Outbox: очередь с пределом;\nпереполнил — отключён", size=7.6, fill=NOTE)
    _arrow(ax, (1.5, 4.35), (1.5, 4.0))
    _label(ax, 1.58, 4.17, "создаёт", size=7, ha="left", style="italic")
    _arrow(ax, (2.55, 3.4), (2.85, 3.95))
    _arrow(ax, (3.95, 3.8), (3.95, 3.3))
    _label(ax, 4.03, 3.55, "put(), не ждёт", size=7, ha="left", style="italic")
    _arrow(ax, (2.8, 2.85), (2.55, 2.82))

    # TCP client threads.
    _box(ax, 0.5, 0.5, 4.85, 1.6, "", fill="#f7fbf7")
    _label(ax, 0.62, 1.9, "client.py: клиент", size=9.5, ha="left", weight="bold")
    _box(ax, 0.65, 0.65, 2.2, 1.0, "главный поток:\ninput() → send()", size=8.5)
    _box(ax, 3.0, 0.65, 2.2, 1.0, "поток приёма:\nrecv() → печать", size=8.5)

    # UDP server.
    _box(ax, 5.95, 2.35, 4.55, 3.05, "", fill="#fffaf2")
    _label(ax, 6.07, 5.2, "server.py: ChatServer", size=9.5, ha="left", weight="bold")
    _box(ax, 6.15, 2.55, 4.15, 2.4,
         "один поток:\n"
         "recvfrom() → ChatRoom → sendto()\n\n"
         "участник = адрес (хост, порт)\n"
         f"молчит дольше {config.CLIENT_TIMEOUT:g} с — удалён\n"
         "sendto() не ждёт получателя,\n"
         "поэтому потоки на клиентов не нужны", size=8.5)

    # UDP client.
    _box(ax, 5.95, 0.5, 4.55, 1.6, "", fill="#fffaf2")
    _label(ax, 6.07, 1.9, "client.py: клиент", size=9.5, ha="left", weight="bold")
    _box(ax, 6.1, 0.65, 1.35, 1.0, "главный\nпоток:\ninput()", size=8)
    _box(ax, 7.55, 0.65, 1.35, 1.0, "поток\nприёма:\nrecv()", size=8)
    _box(ax, 9.0, 0.65, 1.35, 1.0,
         f"поток\n/ping раз\nв {config.HEARTBEAT_INTERVAL:g} с", size=8)

    _save(fig, path)


# --- Sequence diagrams ---------------------------------------------------------
class Sequence:
    """A small sequence diagram: lifelines left to right, messages top down."""

    def __init__(self, participants, steps, width=11.0, step=0.42):
        self.participants = participants
        self.steps = steps
        self.width = width
        self.step = step

    def draw(self, path):
        # No title: the report's caption names the figure.
        height = 1.0 + self.step * len(self.steps) + 0.35
        fig, ax = _figure(self.width, height)
        n = len(self.participants)
        margin = 1.1
        span = self.width - 2 * margin
        xs = [margin + span * i / (n - 1) for i in range(n)]
        head_y = height - 0.4
        bottom = 0.35
        for x, name in zip(xs, self.participants):
            _box(ax, x - 0.9, head_y - 0.3, 1.8, 0.6, name, size=9, weight="bold",
                 fill=COMMON)
            ax.plot([x, x], [bottom, head_y - 0.3], color="#8795a5", linewidth=1.0,
                    linestyle=(0, (5, 4)), zorder=0)
        y = head_y - 0.7
        for item in self.steps:
            kind = item[0]
            if kind == "msg":
                _, a, b, text, how = item
                color = {"call": LINE, "reply": REPLY, "bad": BAD, "lost": "#888888"}[how]
                x1, x2 = xs[a], xs[b]
                if a == b:  # an action of one participant
                    _box(ax, x1 - 0.05, y - 0.16, 0.1, 0.32, "", fill=color, edge=color,
                         style="square,pad=0")
                    _label(ax, x1 + 0.15, y, text, size=8.8, ha="left", color=color)
                else:
                    _arrow(ax, (x1, y), (x2, y), color=color, dashed=how in ("reply", "lost"))
                    _label(ax, (x1 + x2) / 2, y + 0.14, text, size=8.8, color=color,
                           background="white")
            elif kind == "note":
                _, a, b, text = item
                left = min(xs[a], xs[b]) - 0.8
                right = max(xs[a], xs[b]) + 0.8
                _box(ax, left, y - 0.15, right - left, 0.3, text, size=8.5, fill=NOTE,
                     style="square,pad=0", edge="#c9b98a", lw=0.8)
            y -= self.step
        _save(fig, path)


def tcp_sequence(path):
    """Joining, a message, a private message and leaving over TCP."""
    A, S, B = 0, 1, 2
    steps = [
        ("msg", A, S, "connect(): SYN, SYN-ACK, ACK", "call"),
        ("msg", S, S, "accept(): два потока для Анны", "call"),
        ("msg", S, A, "*** Введите имя…", "reply"),
        ("msg", A, S, "Анна\\n", "call"),
        ("msg", S, A, "*** Добро пожаловать, Анна! …", "reply"),
        ("msg", S, B, "*** Анна входит в чат", "reply"),
        ("note", A, B, "TCP — поток байтов: сервер режет его на строки по \\n (LineFramer)"),
        ("msg", A, S, "Всем привет!\\n", "call"),
        ("msg", S, B, "Анна: Всем привет!", "reply"),
        ("msg", B, S, "/msg Анна Привет!\\n", "call"),
        ("msg", S, A, "Борис (лично): Привет!", "reply"),
        ("msg", A, S, "/frobnicate\\n", "bad"),
        ("msg", S, A, "!!! Неизвестная команда /frobnicate. …", "bad"),
        ("msg", A, S, "/quit\\n", "call"),
        ("msg", S, A, "*** До свидания, Анна!", "reply"),
        ("msg", S, A, "FIN: соединение закрыто", "reply"),
        ("msg", S, B, "*** Анна выходит из чата", "reply"),
        ("note", A, B, "обрыв или EOF без /quit дают то же уведомление, ровно один раз"),
    ]
    Sequence(["Клиент «Анна»", "Сервер TCP", "Клиент «Борис»"], steps).draw(path)


def udp_sequence(path):
    """Joining, a message, heartbeats, a silent member removed, leaving over UDP."""
    A, S, B = 0, 1, 2
    steps = [
        ("note", A, S, "соединения нет: сразу первая датаграмма"),
        ("msg", A, S, "/join Анна", "call"),
        ("msg", S, S, "запомнил адрес (хост, порт) → «Анна»", "call"),
        ("msg", S, A, "*** Добро пожаловать, Анна! …", "reply"),
        ("msg", S, B, "*** Анна входит в чат", "reply"),
        ("note", A, B, "одна датаграмма — одно сообщение, не длиннее "
                       f"{ru.integer(config.MAX_MESSAGE_BYTES)} байт; доставка и порядок не гарантированы"),
        ("msg", A, S, "Всем привет!", "call"),
        ("msg", S, B, "Анна: Всем привет!", "reply"),
        ("msg", B, S, f"/ping (раз в {config.HEARTBEAT_INTERVAL:g} с)", "call"),
        ("msg", S, B, "*** pong (клиент не показывает)", "reply"),
        ("msg", A, S, f"/ping (раз в {config.HEARTBEAT_INTERVAL:g} с)", "call"),
        ("msg", S, A, "*** pong (клиент не показывает)", "reply"),
        ("note", S, B, "Борис исчез молча: процесс убит, сеть пропала"),
        ("msg", S, S, f"от Бориса тишина дольше {config.CLIENT_TIMEOUT:g} с — удалить", "bad"),
        ("msg", S, A, "*** Борис выходит из чата: нет связи …", "reply"),
        ("msg", A, S, "/quit", "call"),
        ("msg", S, A, "*** До свидания, Анна!", "reply"),
        ("note", A, S, "никакого FIN: сервер просто забывает адрес"),
    ]
    Sequence(["Клиент «Анна»", "Сервер UDP", "Клиент «Борис»"], steps).draw(path)


DIAGRAMS = {
    "architecture.png": architecture,
    "tcp_sequence.png": tcp_sequence,
    "udp_sequence.png": udp_sequence,
}


def draw_all(folder):
    """Draw every diagram into ``folder`` (a Path); return the file paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in DIAGRAMS.items():
        path = folder / name
        draw(path)
        paths.append(path)
    return paths
