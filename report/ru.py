"""Numbers and counts as a Russian reader expects them, for all the report shows.

Groups of thousands are set apart by a narrow no-break space (``5 257 152``),
the decimal separator is a comma (``0,46``), and a noun agrees with its number
through the chat's one helper, :func:`chat_common.text.plural`.  Every number
of the report goes through :func:`integer` or :func:`decimal`, so a value
quoted in the text is rounded exactly as in the table it comes from.
"""

import math
import re

from chat_common import text

GROUP = "\u202f"
"""Between groups of thousands: a narrow no-break space (a number never breaks)."""

NBSP = "\u00a0"
"""Between a number and its noun or unit (``40 мс``, ``5 %``): no line break there."""


def _missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def integer(value):
    """``value`` rounded to a whole number, thousands apart: ``9 081 743``;
    ``"—"`` for None or NaN."""
    return decimal(value, 0)


def decimal(value, digits=1):
    """``value`` with ``digits`` digits after a decimal comma, thousands apart:
    ``1 068,3`` (:func:`chat_common.text.number`, the one Russian number
    helper, with narrow no-break spaces and a true minus sign); ``"—"`` for
    None or NaN."""
    if _missing(value):
        return "—"
    shown = text.number(value, digits).replace(" ", GROUP)
    if shown.startswith("-"):  # no sign at all for a value that rounds to zero
        shown = ("−" + shown[1:]) if shown.strip("-0," + GROUP) else shown[1:]
    return shown


def seconds(value):
    """A setting in seconds as the report writes it: ``60``, ``0,5``."""
    return f"{value:g}".replace(".", ",")


def percent(value, digits=1):
    """``94,8 %`` (a space before the sign, as Russian typography has it)."""
    return decimal(value, digits) + NBSP + "%"


def count(n, one, few, many):
    """``n`` and the noun agreeing with it: ``count(2732, "сообщение",
    "сообщения", "сообщений")`` is ``"2 732 сообщения"`` (no line break inside)."""
    phrase = text.plural(n, one, few, many)  # "2 732 сообщения", ordinary spaces
    return re.sub(r"(?<=\d) (?=\d)", GROUP, phrase).replace(" ", NBSP, 1)


def noun(n, one, few, many):
    """Only the noun of :func:`count`: ``noun(5, "тест", "теста", "тестов")`` is ``"тестов"``."""
    return text.plural(n, one, few, many).split(" ", 1)[1]
