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
