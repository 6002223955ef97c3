"""Normalisation and the plain-number fast path."""

from __future__ import annotations

from fractions import Fraction

import pytest

from qwen25_rl.reward.math import fast_check, score_math
from qwen25_rl.reward.math_normalize import (
    Equation,
    comparison_key,
    e_notation_to_latex,
    mixed_numbers_to_fractions,
    normalize_answer,
    numbers_equal,
    parse_plain_number,
    split_equation,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\u22125", "-5"),
        ("2\u03c0", "2\\pi"),
        ("\u221a2", "\\sqrt{2}"),
        ("\u221a(x+1)", "\\sqrt{x+1}"),
        ("x\u00b2", "x^2"),
        ("\uff11\uff12", "12"),  # full-width digits
        ("\\$32,\\!348", "32,348"),
        ("\\dfrac{1}{2}", "\\frac{1}{2}"),
        ("\\left( 1, 2 \\right)", "( 1, 2 )"),
        ("30^\\circ", "30"),
        ("30^{\\circ}", "30"),
        ("30\\circ", "30"),
        ("f \\circ g", "f \\circ g"),  # composition, not degrees
        ("25\\%", "25"),
        ("15\\mbox{ cm}^2", "15"),
        ("5.4 \\text{ cents}", "5.4"),
        ("864 square inches", "864"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),  # a text answer is not a unit
        ("x \\text{ cm}", "x \\text{ cm}"),  # a unit after a symbol is left to math-verify
        ("1 < x \\le 3.", "1 < x \\le 3"),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),  # row break kept
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    ("text", "value", "decimal"),
    [
        ("42", Fraction(42), False),
        ("-007", Fraction(-7), False),
        ("1,234,567", Fraction(1234567), False),
        ("0.50", Fraction(1, 2), True),
        (".5", Fraction(1, 2), True),
        ("3/4", Fraction(3, 4), False),
        ("-2 1/2", Fraction(-5, 2), False),
        ("\\frac{3}{4}", Fraction(3, 4), False),
        ("\\frac 59", Fraction(5, 9), False),
        ("\\frac{270}7", Fraction(270, 7), False),
        ("-1\\frac{4}{5}", Fraction(-9, 5), False),
        ("1.5e3", Fraction(1500), True),
        ("2.5E-2", Fraction(1, 40), True),
        ("1.5\\times10^{3}", Fraction(1500), True),
        ("3\\cdot10^{-2}", Fraction(3, 100), True),
        ("10^{6}", Fraction(10**6), False),
        ("0.\\overline{3}", Fraction(1, 3), False),
        ("-1.\\overline{142857}", Fraction(-8, 7), False),
        ("0.1\\overline{6}", Fraction(1, 6), False),
    ],
)
def test_plain_numbers_parse_exactly(text, value, decimal):
    number = parse_plain_number(text)
    assert number is not None and number.value == value and number.decimal is decimal


@pytest.mark.parametrize(
    "text",
    [
        "1,2",  # a list, not a number
        "12,34",  # not thousands groups
        "1, 000",  # a list: separators have no space after them
        "2\\frac{3}{2}",  # not a proper mixed number: left to sympy
        "210^3",  # 210 cubed, not 2 * 10^3
        "1/0",
        "\\frac{1}{0}",
        "1e999999999",  # would build a billion-digit integer
        "9" * 400,  # beyond MAX_DIGITS
        "x",
        "2\\sqrt{2}",
    ],
)
def test_non_plain_or_oversized_numbers_are_refused(text):
    assert parse_plain_number(text) is None


def test_decimal_approximates_non_terminating_value_only_with_six_significant_digits():
    third = parse_plain_number("\\frac{1}{3}")
    assert numbers_equal(third, parse_plain_number("0.333333"))
    assert numbers_equal(third, parse_plain_number("0.3333333333"))
    assert not numbers_equal(third, parse_plain_number("0.33333"))
    assert not numbers_equal(third, parse_plain_number("0.333334"))
    two_thirds = parse_plain_number("2/3")
    assert numbers_equal(two_thirds, parse_plain_number("0.666667"))  # rounded
    assert numbers_equal(two_thirds, parse_plain_number("0.666666"))  # truncated
    assert numbers_equal(parse_plain_number("-2/3"), parse_plain_number("-0.666667"))
    assert not numbers_equal(parse_plain_number("-2/3"), parse_plain_number("0.666667"))


def test_two_decimals_must_be_exactly_equal():
    # math-verify's round-to-6-places rule would call these equal
    assert not numbers_equal(parse_plain_number(".0000672"), parse_plain_number("0.0000673"))
    assert not numbers_equal(parse_plain_number("18"), parse_plain_number("18.000001"))
    assert numbers_equal(parse_plain_number("18"), parse_plain_number("18.000"))


def test_comparison_key_ignores_spaces_except_between_digits():
    assert comparison_key("y = 2x + 3") == comparison_key("y=2x+3")
    assert comparison_key("2 1/2") != comparison_key("21/2")


def test_split_equation_names_the_quantity_and_keeps_every_side():
    assert split_equation("x = 5") == Equation("x", ("5",), (False,))
    assert split_equation("x = 3 + 2 = 5") == Equation("x", ("3 + 2", "5"), (False, False))
    assert split_equation("10 = 9") == Equation(None, ("10", "9"), (False, False))
    assert split_equation("2x = 9") == Equation(None, ("2x", "9"), (False, False))
    assert split_equation("f(3) = \\sqrt{2} \\approx 1.414") == Equation("f(3)", ("\\sqrt{2}", "1.414"), (False, True))
    assert split_equation("\\pi = 3.14").name is None  # a constant is not a name
    assert split_equation("x <= 3") == Equation(None, ("x <= 3",), (False,))
    assert split_equation("\\{x = 1, y = 2\\}").values == ("\\{x = 1, y = 2\\}",)
    assert split_equation("5") == Equation(None, ("5",), (False,))


def test_rewrites_before_sympy():
    assert mixed_numbers_to_fractions("3 + 2\\frac{1}{2}") == "3 + \\frac{5}{2}"
    assert mixed_numbers_to_fractions("x^2\\frac{1}{2}") == "x^2\\frac{1}{2}"  # an exponent, not a mixed number
    assert e_notation_to_latex("1.5e3 + 2E-4") == "1.5\\times 10^{3} + 2\\times 10^{-4}"
    assert e_notation_to_latex("\\sec3") == "\\sec3"


def test_fast_paths_decide_numbers_without_sympy():
    for response, gold in [("#### 1,200", "1200"), ("\\boxed{0.5}", "\\frac12"), ("\\boxed{x=4}", "5")]:
        assert not hasattr(fast_check(response, gold), "pred"), (response, gold)


def test_symbolic_answers_are_passed_on():
    check = fast_check("\\boxed{2\\sqrt{2}}", "\\sqrt{8}")
    assert (check.pred, check.gold) == ("2\\sqrt{2}", "\\sqrt{8}")


@pytest.mark.parametrize(
    ("response", "gold", "status", "detail"),
    [
        ("\\boxed{5}", "", "error", "gold answer is empty"),
        ("\\boxed{5}", "  ", "error", "gold answer is empty"),
        ("I do not know.", "5", "no_answer", "no \\boxed{}"),
        ("\\boxed{\\%}", "5", "no_answer", "empty after normalisation"),
    ],
)
def test_bad_gold_and_missing_answer_are_reported(response, gold, status, detail):
    score = score_math(response, gold)
    assert score.status.value == status and detail in score.detail and not score.correct
