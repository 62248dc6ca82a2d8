"""Individual-number guard: 12 digits with a valid check digit are recognised, nothing else."""

from __future__ import annotations

import pytest

from idp.privacy import contains_individual_number


def check_digit(body: str) -> int:
    """The ordinance's rule, written out independently of idp.privacy."""
    assert len(body) == 11
    total = 0
    for n in range(1, 12):  # P_n counted from the right
        p = int(body[-n])
        q = n + 1 if n <= 6 else n - 5
        total += p * q
    remainder = total % 11
    return 0 if remainder <= 1 else 11 - remainder


def number(body: str) -> str:
    return body + str(check_digit(body))


def wrong(body: str) -> str:
    return body + str((check_digit(body) + 1) % 10)


BODIES = ["12345678901", "00000000000", "98765432109", "31415926535", "27182818284"]
VALID = [number(b) for b in BODIES]


def test_rule_on_a_hand_computed_example() -> None:
    # 12345678901: P1..P11 = 1,0,9,...,1; sum(P*Q) = 1*2+0*3+9*4+8*5+7*6+6*7+5*2+4*3+3*4+2*5+1*6 = 212;
    # 212 mod 11 = 3, so the check digit is 8.
    assert check_digit("12345678901") == 8


@pytest.mark.parametrize("value", VALID)
def test_valid_numbers_are_detected(value: str) -> None:
    assert contains_individual_number(value)


@pytest.mark.parametrize("sep", [" ", "-"])
def test_separators(sep: str) -> None:
    v = VALID[0]
    assert contains_individual_number(f"{v[:4]}{sep}{v[4:8]}{sep}{v[8:]}")
    assert contains_individual_number(f"My number is {v[:4]}{sep}{v[4:8]}{sep}{v[8:]}.")


def test_embedded_in_text() -> None:
    assert contains_individual_number(f"個人番号:{VALID[1]}です")


@pytest.mark.parametrize("value", [wrong(b) for b in BODIES])
def test_wrong_check_digit_is_not_flagged(value: str) -> None:
    assert not contains_individual_number(value)


@pytest.mark.parametrize("value", [VALID[0][:11], VALID[0] + "7", "1" + VALID[0], VALID[0][1:]])
def test_eleven_or_thirteen_digits_are_not_flagged(value: str) -> None:
    assert len(value) in (11, 13)
    assert not contains_individual_number(value)


def test_nested_values() -> None:
    v = VALID[2]
    assert contains_individual_number({"a": [{"b": ("x", f"id {v}")}]})
    assert contains_individual_number({v: "key, not value"})
    assert contains_individual_number([1, 2, [v]])
    assert not contains_individual_number({"a": [{"b": ("x", wrong(BODIES[2]))}]})


@pytest.mark.parametrize("value", [None, 3, "", "090-1234-5678", {"redirect_uris": ["https://rp.example/cb"]}])
def test_ordinary_values_are_not_flagged(value: object) -> None:
    assert not contains_individual_number(value)


def test_json_integer_is_flagged() -> None:
    assert contains_individual_number({"default_max_age": int(VALID[0])})


def _spelled(spelling: str, v: str = VALID[0]) -> str:
    return spelling.format(a=v[:4], b=v[4:8], c=v[8:], all=v)


def _wide(text: str) -> str:
    """Full-width digits, as an IME writes them."""
    return text.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})


# Real spellings (PROTOCOL: never asked for, stored or logged): widths, dashes, dots, prefixes.
SPELLINGS = [
    "{a}{b}{c}", "{a} {b} {c}", "{a}-{b}-{c}", "{a}\u3000{b}\u3000{c}",  # ideographic space
    "{a}\uff0d{b}\uff0d{c}",  # full-width hyphen-minus
    "{a}\u30fc{b}\u30fc{c}",  # katakana prolonged sound mark typed as a dash
    "{a}\u2010{b}\u2010{c}", "{a}\u2013{b}\u2013{c}", "{a}\u2014{b}\u2014{c}", "{a}\u2212{b}\u2212{c}",
    "{a}.{b}.{c}", "{a}\uff0e{b}\uff0e{c}", "{a}\u30fb{b}\u30fb{c}", "{a} - {b} - {c}",
    "No.{all}", "No{all}", "NO. {a} {b} {c}", "no:{a}-{b}-{c}", "番号{all}", "番号：{a} {b} {c}",
    "個人番号は{a}-{b}-{c}です", "マイナンバー：{a}\u3000{b}\u3000{c}",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_real_spellings_are_recognised(spelling: str) -> None:
    assert contains_individual_number(_spelled(spelling))
    assert contains_individual_number(_wide(_spelled(spelling)))  # and in full-width digits


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_real_spellings_with_a_wrong_check_digit_are_not_flagged(spelling: str) -> None:
    assert not contains_individual_number(_spelled(spelling, wrong(BODIES[0])))


@pytest.mark.parametrize("value", [
    "00000000-0000-0000-0000-000000000000",  # an AAGUID
    f"{VALID[0][:8]}-{VALID[0][8:]}00-0000-0000-000000000000",
    "2026-12-01 12:00:00", "090-1234-5678", "〒370-0001 群馬県高崎市", f"ab{VALID[0]}", f"{VALID[0]}x",
    f"{VALID[0]} {VALID[1][:4]}",  # sixteen digits: not a 12-digit number
])
def test_lookalikes_are_not_flagged(value: str) -> None:
    assert not contains_individual_number(value)
