"""Guards for the individual number (個人番号), which the IdP never asks for, stores or logs.

The My Number Act forbids collecting it outside its statutory uses, so any input that
carries something shaped like one (12 digits whose last is a valid check digit, as the
Ministry ordinance defines it) is refused before it can reach storage or a log. The
check digit only serves to recognise such input; nothing is ever derived from it.
"""

from __future__ import annotations

import re
from typing import Any

# Twelve digits, optionally in groups of four with one consistent separator, standing alone:
# not part of a longer token such as a UUID ("0000-0000-0000" inside an AAGUID).
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z-])(\d{4})([ -]?)(\d{4})\2(\d{4})(?![0-9A-Za-z]|-[0-9A-Za-z])")


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


def contains_individual_number(value: Any) -> bool:
    """True when any string inside ``value`` (recursively) carries an individual-number-shaped value."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        return any(_valid_check_digit(m.group(1) + m.group(3) + m.group(4)) for m in _CANDIDATE.finditer(value))
    if isinstance(value, dict):
        return any(contains_individual_number(k) or contains_individual_number(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(contains_individual_number(v) for v in value)
    return False
