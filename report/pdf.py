"""report.md → HTML (Python-Markdown) → PDF (WeasyPrint), laid out as ГОСТ 7.32 has it.

The Markdown stays plain so that it reads well on GitHub and in an editor;
what only the PDF needs is added to the HTML here:

* the part before ``<!-- конец титульного листа -->`` becomes the title page
  (counted as page 1, its number not printed);
* headings in capitals (СОДЕРЖАНИЕ, ЗАКЛЮЧЕНИЕ, ПРИЛОЖЕНИЕ …) are structural
  elements: centred, each on a new page; an appendix heading
  ``ПРИЛОЖЕНИЕ А — Заголовок`` is set on two lines;
* paragraphs ``Рисунок N — …`` (under a figure), ``Таблица N — …`` (above a
  table) and ``Листинг А.1 — …`` (above a listing) become captions that stay
  with what they caption; an image alone in a paragraph becomes a figure;
* a short table is never split between pages; a long one may be, but never
  leaving its first or last rows alone on a page, and its header row repeats;
* the contents list gets page numbers (CSS ``target-counter``);
* code is highlighted by Pygments, one ``<span>`` per line so that a long
  line wraps with a hanging indent instead of running off the page.

The style sheet is ``report/style.css`` (A4, margins 30/15/20/20 mm, DejaVu
Serif 12 pt with 1.5 line spacing, page numbers at the bottom centre).
"""

import hashlib
import os
import re
import zlib
from pathlib import Path

import markdown
from pygments.formatters import HtmlFormatter

from report.build import toc_slug

STYLE = Path(__file__).resolve().parent / "style.css"
TITLE_END = "<!-- конец титульного листа -->"
PYGMENTS_STYLE = "friendly"
FIXED_EPOCH = 1700000000
"""Time stamp (seconds since 1970) written into the PDF's embedded fonts."""

SHORT_TABLE_ROWS = 5
SHORT_TABLE_CHARS = 900
"""A table with at most this many body rows and this many characters of text
is kept whole on one page; a bigger one may break between rows."""

KEEP_ROWS = 2
"""A long table keeps its first and last this many rows with their neighbours,
so no page holds a lone row of it (its total row included)."""

KEEP_LINES = 10
"""Code blocks up to this many lines are not split between pages."""


def markdown_to_html(text):
    """The body HTML of ``text`` (Markdown), without the title-page split."""
    md = markdown.Markdown(
        extensions=["tables", "fenced_code", "codehilite", "toc", "sane_lists"],
        extension_configs={
            "codehilite": {
                "css_class": "codehilite",
                "guess_lang": False,
                "linespans": "ln",
            },
            "toc": {"slugify": toc_slug, "toc_depth": "2-3"},
        },
        output_format="html",
    )
    return md.convert(text)


def _captions(body):
    body = re.sub(r"<p>((?:Рисунок|Таблица|Листинг) (?:[А-Я]\.)?\d+ —.*?)</p>",
                  lambda m: f'<p class="caption">{m.group(1)}</p>', body, flags=re.S)
    # A table caption stays on the page of its table.
    body = re.sub(r'<p class="caption">(Таблица .*?)</p>\s*(<table>.*?</table>)',
                  lambda m: _table_block(m.group(1), m.group(2)), body, flags=re.S)
    # A listing caption stays with the first lines of its listing.
    body = re.sub(r'<p class="caption">(Листинг .*?)</p>',
                  r'<p class="caption listing-caption">\1</p>', body)
    body = re.sub(r'<p><img ([^>]*)src="([^"]*)"([^>]*)></p>',
                  lambda m: f'<p class="figure {_figure_kind(m.group(2))}">'
                            f'<img {m.group(1)}src="{m.group(2)}"{m.group(3)}></p>', body)
    body = re.sub(r'<p class="caption">(Рисунок .*?)</p>',
                  r'<p class="caption figure-caption">\1</p>', body)
    return body


def _hanging_indents(body):
    """Give each source line of a listing a hanging indent of its own depth, so
    that a long line wraps under its own code, not under the line's start."""
    def indent(match):
        text = re.sub(r"<[^>]+>", "", body[match.end():match.end() + 600])
        depth = len(text) - len(text.lstrip(" ")) + 4  # in characters (ch)
        return f'{match.group(0)[:-1]} style="padding-left: {depth}ch; text-indent: -{depth}ch">'

    return re.sub(r'<span id="ln-[^"]+">', indent, body)


def _figure_kind(src):
    """``diagram`` for the drawn schemes, ``plot`` for the measured plots."""
    return "diagram" if src.startswith("diagrams/") else "plot"


def _table_block(caption, table):
    """A table with its caption, and the page-break rules of its size."""
    rows = re.findall(r"<tr>", table.split("<tbody>", 1)[-1])
    chars = len(re.sub(r"<[^>]+>", "", table))
    if len(rows) <= SHORT_TABLE_ROWS and chars <= SHORT_TABLE_CHARS:
        kind = "table-block whole"
    else:
        kind = "table-block long"
        head, _, rest = table.partition("<tbody>")
        parts = rest.split("<tr>")
        count = len(parts) - 1
        for index in range(1, count + 1):
            classes = []
            if index <= KEEP_ROWS:
                classes.append("keep-next")  # not alone at the foot of a page
            if index > count - KEEP_ROWS:
                classes.append("keep-prev")  # not alone at the top of a page
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            parts[index] = attribute + ">" + parts[index]
        table = head + "<tbody>" + parts[0] + "".join("<tr" + part for part in parts[1:])
    return (f'<div class="{kind}"><p class="caption table-caption">{caption}</p>'
            f"{table}</div>")


def _keep_together(body):
    """Wrap "Intro:" + a short code block into one unbreakable block."""
    def wrap(match):
        if match.group(2).count("\n") > KEEP_LINES:
            return match.group(0)
        return f'<div class="keep">{match.group(1)}{match.group(2)}</div>'

    return re.sub(r'(<p>[^<]*:</p>\s*)(<div class="codehilite">.*?</pre></div>)', wrap,
                  body, flags=re.S)


def _headings(body):
    """Classes of the ``h2``: structural elements and appendices (see module doc)."""
    def h2(match):
        attrs, title = match.group(1), match.group(2)
        plain = re.sub(r"<[^>]+>", "", title)
        head, dash, rest = plain.partition(" — ")
        if not head.isupper():
            return match.group(0)
        if head.startswith("ПРИЛОЖЕНИЕ") and dash:
            return (f'<h2{attrs} class="structural appendix">{head}'
                    f'<span class="appendix-title">{rest}</span></h2>')
        return f'<h2{attrs} class="structural">{title}</h2>'

    return re.sub(r"<h2([^>]*)>(.*?)</h2>", h2, body)


def _toc(body):
    # The first list after the "СОДЕРЖАНИЕ" heading is the contents.
    return re.sub(r'(<h2 id="содержание"[^>]*>.*?</h2>\s*)<ul>', r'\1<ul class="toc">',
                  body, count=1, flags=re.S)


def _appendices(body):
    """Wrap everything from the first appendix on in ``<div class="appendices">``."""
    start = body.find('class="structural appendix"')
    if start < 0:
        return body
    start = body.rfind("<h2", 0, start)
    return body[:start] + '<div class="appendices">' + body[start:] + "</div>"


def _title_page(title_html):
    """Title page: parts separated by horizontal rules become blocks."""
    parts = re.split(r"<hr\s*/?>", title_html)
    names = ["tp-top", "tp-middle", "tp-fields", "tp-bottom"]
    blocks = []
    for index, part in enumerate(parts):
        name = names[index] if index < len(names) else "tp-extra"
        blocks.append(f'<div class="{name}">{part}</div>')
    return '<section class="title-page">' + "".join(blocks) + "</section>"


def to_html(text):
    """A complete HTML document for ``text`` (report.md)."""
    title_md, sep, rest = text.partition(TITLE_END)
    if not sep:
        title_md, rest = "", text
    title_md = re.sub(r"<!--.*?-->", "", title_md, flags=re.S)
    body = markdown_to_html(rest)
    body = _appendices(_toc(_headings(_keep_together(_captions(_hanging_indents(body))))))
    title = _title_page(markdown_to_html(title_md)) if title_md.strip() else ""
    pygments_css = HtmlFormatter(style=PYGMENTS_STYLE).get_style_defs(".codehilite")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return (
        "<!DOCTYPE html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\">"
        "<title>Отчёт по лабораторной работе: многопользовательский чат на сокетах</title>"
        f'<meta name="description" content="report.md sha256 {digest}">'
        '<meta name="generator" content="python -m report.build">'
        f"<style>{pygments_css}</style>"
        "</head><body>" + title + body + "</body></html>"
    )


def markdown_digest(text):
    """The marker of ``text`` that :func:`render` stores in the PDF."""
    return "report.md sha256 " + hashlib.sha256(text.encode("utf-8")).hexdigest()


def pdf_has_marker(data, marker):
    """Whether the PDF bytes ``data`` carry ``marker`` (from :func:`markdown_digest`).

    WeasyPrint stores the document's metadata in a compressed object stream,
    so every Flate stream is inflated and searched.
    """
    needle = marker.encode("ascii")
    if needle in data:
        return True
    for match in re.finditer(rb"stream\r?\n", data):
        end = data.find(b"endstream", match.end())
        if end < 0:
            break
        try:
            inflated = zlib.decompressobj().decompress(data[match.end():end])
        except zlib.error:
            continue
        if needle in inflated:
            return True
    return False


def render(markdown_path, pdf_path):
    """Render ``markdown_path`` (report.md) into ``pdf_path``.

    Relative image paths resolve against the folder of ``markdown_path``.
    """
    # Fonts are subset into the PDF by fontTools, which stamps each subset
    # with the current time unless SOURCE_DATE_EPOCH is set: a fixed stamp
    # makes the same report.md give the same PDF, byte for byte.
    os.environ.setdefault("SOURCE_DATE_EPOCH", str(FIXED_EPOCH))
    from weasyprint import CSS, HTML

    markdown_path = Path(markdown_path)
    text = markdown_path.read_text(encoding="utf-8")
    document = HTML(string=to_html(text), base_url=str(markdown_path.parent.resolve()) + "/")
    document.write_pdf(
        pdf_path,
        stylesheets=[CSS(filename=str(STYLE))],
        uncompressed_pdf=False,
        # No creation time in the file: the same report.md gives the same PDF.
        pdf_identifier=b"report",
    )
