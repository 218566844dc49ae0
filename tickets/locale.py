"""Which language to write to a customer in: theirs if we know it, else a guess from their words;
and dates written as their mail client writes them.

The guess only has to choose among the few languages the mail templates exist in, from short
chat lines. Counting each language's most frequent function words does that well enough and
needs no model download; a general language-identification library would add a dependency (and
often a model file) to tell apart four languages.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the and is are you your my i it to of in for on with have has was not this that "
        "can please thanks thank hello hi what when where why how would could order"
    ),
    "de": _words(
        "der die das und ist sind sie ich mein meine nicht mit für auf ein eine einen zu "
        "von bitte danke hallo wie was wann warum ihr ihre kann können habe hat bestellung "
        "noch auch"
    ),
    "fr": _words(
        "le la les et est sont vous je mon ma mes pas avec pour sur un une des de du à "
        "merci bonjour svp comment quand pourquoi votre vos ai a commande ne qui"
    ),
    "es": _words(
        "el la los las y es son usted yo mi mis no con para por un una unos de del que "
        "gracias hola cómo cuándo por qué su sus tengo ha pedido muy pero"
    ),
}
_TOKEN = re.compile(r"[^\W\d_]+", re.UNICODE)
MIN_HITS = 2


def detect_locale(texts: Iterable[str], supported: Iterable[str]) -> str | None:
    """The supported language whose common words the texts use most; None if unclear."""
    allowed = [lang for lang in supported if lang in _WORDS]
    tokens = [t.casefold() for text in texts for t in _TOKEN.findall(text[:5000])]
    if not tokens or not allowed:
        return None
    scores = {lang: sum(t in _WORDS[lang] for t in tokens) for lang in allowed}
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    if scores[best] < MIN_HITS or (len(ranked) > 1 and ranked[0] == ranked[1]):
        return None
    return best


def choose_locale(
    widget_locale: str | None,
    customer_texts: Iterable[str],
    app_default: str,
    supported: Iterable[str],
) -> str:
    """The customer's widget locale, else their language guessed from their text, else the
    app's default, else English; always one of `supported`."""
    available = list(supported)
    if widget_locale:
        base = widget_locale.replace("_", "-").split("-")[0].lower()
        if base in available:
            return base
    guessed = detect_locale(customer_texts, available)
    if guessed:
        return guessed
    if app_default in available:
        return app_default
    return "en" if "en" in available else available[0]


# Dates as mail clients write them in a reply's attribution line ("On Tue, 24 Nov 2026 at
# 10:00 ..."), in UTC: the customer's own time zone is not known.
_DATE_WORDS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # pattern, weekdays from Monday, months from January
    "en": (
        "{wd}, {d} {mon} {y} at {hm} UTC",
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
    ),
    "de": (
        "{wd}, {d}. {mon} {y} um {hm} UTC",
        ("Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."),
        (
            "Jan.", "Feb.", "März", "Apr.", "Mai", "Juni",
            "Juli", "Aug.", "Sept.", "Okt.", "Nov.", "Dez.",
        ),
    ),
    "fr": (
        "{wd} {d} {mon} {y} à {hm} UTC",
        ("lun.", "mar.", "mer.", "jeu.", "ven.", "sam.", "dim."),
        (
            "janv.", "févr.", "mars", "avr.", "mai", "juin",
            "juil.", "août", "sept.", "oct.", "nov.", "déc.",
        ),
    ),
    "es": (
        "{wd}, {d} {mon} {y} a las {hm} UTC",
        ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
        ("ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sept", "oct", "nov", "dic"),
    ),
}  # fmt: skip


def mail_date(at: dt.datetime, locale: str) -> str:
    """`at` as a mail client writes it in `locale` (English for a language not listed)."""
    pattern, weekdays, months = _DATE_WORDS.get(locale, _DATE_WORDS["en"])
    at = at.astimezone(dt.UTC)
    return pattern.format(
        wd=weekdays[at.weekday()],
        d=at.day,
        mon=months[at.month - 1],
        y=at.year,
        hm=at.strftime("%H:%M"),
    )
