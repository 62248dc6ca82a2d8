"""Guards for the individual number (個人番号), which the IdP never asks for, stores or logs.

The My Number Act forbids collecting it outside its statutory uses, so any input that
carries something shaped like one (12 digits whose last is a valid check digit, as the
Ministry ordinance defines it) is refused before it can reach storage or a log. The
check digit only serves to recognise such input; nothing is ever derived from it.

People write it in many ways: full-width digits (１２３４), ideographic spaces,
full-width or Japanese hyphens and dashes (－ ー ‐ —), dots, a ``No.`` or ``番号``
before it. The text is NFKC-normalised (Unicode UAX #15: full-width forms become ASCII),
then every run of digits joined only by separators is read with the separators stripped;
a run of exactly twelve digits with a valid check digit is an individual number.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# After NFKC: white space of every width, ASCII hyphen-minus, the Unicode hyphens and
# dashes (U+2010–U+2015), minus (U+2212), the katakana prolonged sound mark and middle dot
# often typed as dashes and dots (U+30FC, U+30FB), and the full stop.
_SEPARATORS = r"\s\-\u2010-\u2015\u2212\u30fc\u30fb."
# A run of digits joined by separators, standing alone: not glued to letters or digits,
# and not one part of a hyphenated token such as a UUID ("…-0000-0000-…" in an AAGUID).
# A ``No`` right before the run ("No123…") is a prefix, not a glued letter.
_RUN = re.compile(
    rf"(?:(?<=[Nn][Oo])|(?<![0-9A-Za-z\-]))\d(?:[{_SEPARATORS}]*\d)*(?![0-9A-Za-z])(?!-[0-9A-Za-z])")


def _valid_check_digit(digits: str) -> bool:
    """Check digit per 行政手続における特定の個人を識別するための番号の利用等に関する法律施行令 §8."""
    body = [int(d) for d in digits[:11]]
    total = 0
    for n in range(1, 12):
        q = n + 1 if n <= 6 else n - 5
        total += body[11 - n] * q
    remainder = total % 11
    check = 0 if remainder <= 1 else 11 - remainder
    return check == int(digits[11])


def _text_carries_number(text: str) -> bool:
    normal = unicodedata.normalize("NFKC", text)
    for match in _RUN.finditer(normal):
        digits = "".join(ch for ch in match.group(0) if ch.isdigit())
        if len(digits) == 12 and _valid_check_digit(digits):
            return True
    return False


def contains_individual_number(value: Any) -> bool:
    """True when any string inside ``value`` (recursively) carries an individual-number-shaped value."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        return _text_carries_number(value)
    if isinstance(value, dict):
        return any(contains_individual_number(k) or contains_individual_number(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains_individual_number(v) for v in value)
    return False
