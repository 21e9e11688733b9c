"""The measurements section: figures and tables saved by notebooks/03_timing.ipynb.

The notebook measures (it takes minutes and its numbers vary from run to run);
the report only shows what the notebook last saved in ``report/figures/``:
the PNG plots and a JSON file with the numbers.  So the report text changes
only when the notebook is run again, never by itself.  Anything missing gives
a clear sentence in the report instead of an error.
"""

import json
from pathlib import Path

PLACEHOLDER = (
    "Замеры ещё не выполнены: графиков в `report/figures/` нет. Выполните блокнот "
    "`notebooks/03_timing.ipynb` (например, `jupyter nbconvert --to notebook --execute "
    "--inplace notebooks/03_timing.ipynb`), затем `python -m report.build`."
)


def _rel(path, base):
    return Path(path).relative_to(base).as_posix()


def section(figures, report):
    """Markdown of the section from the files in ``figures`` (Path);
    image paths relative to ``report`` (the folder of report.md)."""
    figures = Path(figures)
    pngs = sorted(figures.glob("*.png")) if figures.is_dir() else []
    if not pngs:
        return PLACEHOLDER
    parts = []
    for png in pngs:
        title = png.stem.replace("_", " ")
        parts.append(f"![{title}]({_rel(png, report)})\n\n"
                     f"Рисунок {{{{fig:{png.stem}}}}} — {title}")
    return "\n\n".join(parts)


def load_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def conclusions(figures):
    """Extra items of the conclusions drawn from the measurements ("" if none)."""
    return ""
