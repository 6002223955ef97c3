"""Answer normalisation and the exact/numeric fast paths (pure string and Fraction work).

Most GSM8K and many MATH answers are plain numbers; comparing them as exact rationals is
~100x faster than sympy and avoids sympy's pitfalls. Everything here runs in bounded time
on any input: numbers with more than MAX_DIGITS digits or exponents beyond MAX_EXPONENT are
not treated as plain numbers (they go to the sympy stage, which runs under a deadline).

Conventions this module fixes (each is labelled in tests/unit/reward/test_math_verify.py):

- A trailing percent sign, a degree sign and unit words are units: "25\\%" equals "25",
  "30^\\circ" equals "30", "5 \\text{ cm}" equals "5". math-verify treats "25\\%" as 0.25
  and then also accepts "0.25" for a gold of "25\\%"; we strip the percent sign before it
  sees the answer, so a response in the wrong scale is wrong.
- A decimal equals a non-terminating exact value only with at least 6 significant digits,
  rounded or truncated at its last written place (1/3 ~ 0.333333, not 0.33 or 0.333334). Two decimals must be
  exactly equal; math-verify's "round both to 6 places" would accept 0.0000673 for 0.0000672.
- "2\\frac{1}{2}" (a proper fraction right after an integer) and "2 1/2" are mixed numbers;
  math-verify reads "2 1/2" in a sentence as 1/2.
- "1.5e3" is scientific notation; math-verify reads it as 1.5*e*3.
- Unicode minus (U+2212) and dashes, "π", "√", "∞", "°", "×", "≤", superscripts: math-verify
  fails to parse most of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Plain-number guards: int() refuses > 4300 digits anyway, and Fraction("1e999999999") would
# build a billion-digit integer.
MAX_DIGITS = 300
MAX_EXPONENT = 400

_UNICODE = {
    "\u2212": "-",  # minus sign
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2010": "-",
    "\u2011": "-",
    "\ufe63": "-",
    "\uff0d": "-",
    "\u00d7": "\\times ",
    "\u22c5": "\\cdot ",
    "\u00b7": "\\cdot ",
    "\u00f7": "\\div ",
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u00b0": "^\\circ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2260": "\\ne ",
    "\u222a": "\\cup ",
    "\u2229": "\\cap ",
    "\u2208": "\\in ",
    "\u00b1": "\\pm ",
    "\u2213": "\\mp ",
    "\u00b2": "^2",
    "\u00b3": "^3",
    "\u00b9": "^1",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u2032": "'",
    "\u00bd": "\\frac{1}{2}",
    "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}",
    "\u2153": "\\frac{1}{3}",
    "\u2154": "\\frac{2}{3}",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_FULLWIDTH_DIGITS = str.maketrans({chr(0xFF10 + i): str(i) for i in range(10)})
# "√2", "√x", "√(2x)", "√{2}": the radicand is one number, one letter or one bracket group.
_UNICODE_SQRT = re.compile(r"\u221a\s*(\d+(?:\.\d+)?|[A-Za-z]|\([^()]*\)|\{[^{}]*\})")

_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad(?![A-Za-z])|~")
_DECORATION = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\displaystyle|\\textstyle")
# "30^\circ", "30^{\circ}", "30\degree"; a bare "\circ" only after a number ("f \circ g" is
# composition).
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|(?<=\d)\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|\^\{\\text\{o\}\}")
_PERCENT = re.compile(r"(?:\\?%|\\text\{\s*percent\s*\}|\bpercent)$")
# Trailing unit text: "\text{ cm}", "\mbox{ inches}^2", "\text{ dollars}".
_UNIT_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textrm)\{\s*[A-Za-z][A-Za-z .]*\}(?:\s*\^\s*\{?\d\}?)?\s*$")
# Trailing unit words after a plain number: "18 dollars", "864 square inches", "20 km/h".
_UNIT_WORDS = re.compile(r"^(.*?\d)\s+[A-Za-z]{2,}(?:[ /][A-Za-z]+)*\.?(?:\s*\^\s*\{?\d\}?)?$")
_ASSIGNMENT = re.compile(r"^([A-Za-z])\s*=\s*(.+)$")


def normalize_answer(answer: str) -> str:
    """Canonical LaTeX-ish text of an extracted answer (still human-readable; see module doc)."""
    s = answer.translate(_FULLWIDTH_DIGITS)
    s = _UNICODE_SQRT.sub(lambda m: "\\sqrt{" + m.group(1).strip("(){}") + "}", s)
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = s.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    # Currency and math delimiters: "\$18", "$18", "$x=5$".
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    # ",\!" and "{,}" are LaTeX thousands separators ("11,\! 111,\! 100"): no list there.
    s = re.sub(r"(?<=\d)(?:,\\!|\{,\})\s*(?=\d)", ",", s)
    s = s.replace("{,}", ",")
    s = _SPACING.sub(lambda m: "" if m.group(0) in ("\\!", "\\,") else " ", s)
    s = _DECORATION.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.strip().rstrip(".").strip()
    # Units and percent signs, repeatedly: "15\mbox{ cm}^2", "5.4 \text{ cents}", "25\%".
    for _ in range(3):
        before = s
        s = _PERCENT.sub("", s).rstrip()
        stripped = _UNIT_TEXT.sub("", s)
        if stripped and stripped != s and re.search(r"[\d})]$", stripped.rstrip()):
            s = stripped.rstrip()
        m = _UNIT_WORDS.match(s)
        if m and parse_plain_number(m.group(1)) is not None:
            s = m.group(1)
        s = s.strip().rstrip(".").strip()
        if s == before:
            break
    s = re.sub(r"\s+", " ", s)
    return s


def comparison_key(normalized: str) -> str:
    """Text for the exact path: whitespace-insensitive, as LaTeX math is, except between two
    digits ("2 1/2" is a mixed number, not 21/2)."""
    return re.sub(r"(?<!\d)\s+|\s+(?!\d)", "", normalized)


def split_assignment(normalized: str) -> tuple[str | None, str]:
    """'x = 5' -> ('x', '5'); anything else -> (None, text)."""
    m = _ASSIGNMENT.match(normalized)
    if m and "=" not in m.group(2):
        return m.group(1), m.group(2).strip()
    return None, normalized


@dataclass(frozen=True)
class PlainNumber:
    """A number written without symbols: exact value, and whether it was written as a decimal."""

    value: Fraction
    decimal: bool
    places: int = 0  # digits written after the decimal point (decimals only)
    significant: int = 0  # significant digits written (decimals only)


_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DEC = rf"(?:{_INT}(?:\.\d*)?|\.\d+)"
_DECIMAL_RE = re.compile(rf"^([+-]?)({_DEC})(?:[eE]([+-]?\d+))?$")
_TIMES_TEN_RE = re.compile(r"^([+-]?)(?:(\d+(?:\.\d*)?|\.\d+)(?:\\times|\\cdot|\*))?10\^(?:\{([+-]?\d+)\}|(\d))$")
_FRAC_ARG = r"(?:\{\s*([+-]?\d+(?:\.\d+)?)\s*\}|(\d))"
_LATEX_FRAC_RE = re.compile(rf"^([+-]?)(\d+)?\\frac{_FRAC_ARG}{_FRAC_ARG}$")
_REPEATING_RE = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\{(\d+)\}$")
_SLASH_FRAC_RE = re.compile(r"^([+-]?)(?:(\d+) )?(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)$")


def _decimal(sign: str, body: str, exponent: str | None) -> PlainNumber | None:
    digits = body.replace(",", "")
    if len(digits) > MAX_DIGITS:
        return None
    exp = int(exponent) if exponent else 0
    if abs(exp) > MAX_EXPONENT:
        return None
    value = Fraction(digits if digits != "." else "0") * Fraction(10) ** exp
    if sign == "-":
        value = -value
    is_decimal = "." in digits or exp < 0
    places, significant = 0, 0
    if is_decimal:
        int_part, _, frac_part = digits.partition(".")
        places = max(0, len(frac_part) - exp)
        significant = len((int_part + frac_part).lstrip("0"))
    return PlainNumber(value, is_decimal, places, significant)


def _frac_arg(braced: str | None, single: str | None) -> Fraction | None:
    text = braced if braced is not None else single
    if text is None or len(text) > MAX_DIGITS:
        return None
    return Fraction(text)


def parse_plain_number(text: str) -> PlainNumber | None:
    """The value of an integer, decimal, fraction, mixed number or power-of-ten form, else None."""
    s = text.strip()
    if not s or len(s) > MAX_DIGITS + 40:
        return None
    m = _SLASH_FRAC_RE.match(s)  # "3/4", "-2 1/2" (with the space), "1.5/3"
    if m:
        sign, whole, num, den = m.groups()
        if len(num) + len(den) > MAX_DIGITS:
            return None
        n, d = Fraction(num), Fraction(den)
        if d == 0 or (whole is not None and not (0 < n < d)):
            return None
        value = n / d + (int(whole) if whole else 0)
        return PlainNumber(-value if sign == "-" else value, "." in num + den)
    if re.search(r",\s", s):
        return None  # "1, 000" is a list; thousands separators have no space after them
    s = s.replace(" ", "")
    m = _REPEATING_RE.match(s)  # 0.1\overline{6} = 1/6: exact, not a rounding
    if m:
        sign, whole, fixed, period = m.groups()
        if len(whole) + len(fixed) + len(period) > MAX_DIGITS:
            return None
        head = int(whole + fixed or "0")
        value = Fraction(int(whole + fixed + period) - head, 10 ** len(fixed) * (10 ** len(period) - 1))
        return PlainNumber(-value if sign == "-" else value, False)
    m = _DECIMAL_RE.match(s)
    if m:
        return _decimal(m.group(1), m.group(2), m.group(3))
    m = _TIMES_TEN_RE.match(s)
    if m:
        sign, mantissa, exp_braced, exp_single = m.groups()
        return _decimal(sign, mantissa or "1", exp_braced or exp_single)
    m = _LATEX_FRAC_RE.match(s)
    if m:
        sign, whole = m.group(1), m.group(2)
        num, den = _frac_arg(m.group(3), m.group(4)), _frac_arg(m.group(5), m.group(6))
        if num is None or den is None or den == 0:
            return None
        if whole is not None:
            # A mixed number only when it reads as one: 2\frac{1}{2}. "2\frac{3}{2}" is left
            # to sympy (which reads juxtaposition as a product).
            if not (0 < num < den) or len(whole) > MAX_DIGITS:
                return None
            value = int(whole) + num / den
        else:
            value = num / den
        written_decimal = "." in (m.group(3) or "") + (m.group(5) or "")
        return PlainNumber(-value if sign == "-" else value, written_decimal)
    return None


def _terminates(value: Fraction) -> bool:
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


# A decimal stands for a non-terminating value only when written with this many significant
# digits (1/3 ~ 0.333333); fewer is a rounding the problem did not ask for. Six matches
# math-verify's float_rounding=6 for values of order one.
MIN_SIGNIFICANT_FOR_APPROX = 6


def _rounds_to(exact: Fraction, approx: PlainNumber) -> bool:
    """`approx` is `exact` rounded (half up) or truncated to the places it was written with."""
    if (exact < 0) != (approx.value < 0):
        return False
    scale = 10**approx.places
    scaled = abs(exact) * scale
    written = abs(approx.value) * scale
    truncated = scaled.numerator // scaled.denominator
    rounded = (2 * scaled.numerator + scaled.denominator) // (2 * scaled.denominator)
    return written in (truncated, rounded)


def numbers_equal(gold: PlainNumber, pred: PlainNumber) -> bool:
    if gold.value == pred.value:
        return True
    for approx, exact in ((pred, gold), (gold, pred)):
        if (
            approx.decimal
            and approx.significant >= MIN_SIGNIFICANT_FOR_APPROX
            and not exact.decimal
            and not _terminates(exact.value)
            and _rounds_to(exact.value, approx)
        ):
            return True
    return False


def mixed_numbers_to_fractions(normalized: str) -> str:
    """'2\\frac{1}{2}' -> '\\frac{5}{2}' inside larger expressions too (before sympy sees them)."""

    def repl(m: re.Match) -> str:
        whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (0 < num < den):
            return m.group(0)
        return f"\\frac{{{whole * den + num}}}{{{den}}}"

    return re.sub(r"(?<![\d.^_{])(\d{1,12})\s*\\frac\{(\d{1,12})\}\{(\d{1,12})\}", repl, normalized)


_E_NOTATION = re.compile(r"(?<![A-Za-z\\])(\d+(?:\.\d+)?)[eE]([+-]?\d{1,3})(?![A-Za-z\d])")


def e_notation_to_latex(normalized: str) -> str:
    """'1.5e3' -> '1.5\\times 10^{3}' (math-verify reads 1.5e3 as 1.5*e*3)."""
    return _E_NOTATION.sub(lambda m: f"{m.group(1)}\\times 10^{{{m.group(2)}}}", normalized)
