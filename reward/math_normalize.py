"""Answer normalisation and the exact/numeric fast paths (pure string and Fraction work).

Most GSM8K and many MATH answers are plain numbers; comparing them as exact rationals is
~100x faster than sympy and avoids sympy's pitfalls. Everything here runs in bounded time
on any input: numbers with more than MAX_DIGITS digits or exponents beyond MAX_EXPONENT are
not treated as plain numbers (they go to the sympy stage, which runs under a deadline).

Conventions this module fixes (each is labelled in tests/unit/reward/test_math_verify.py and
test_math_integrity.py):

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
- A comma is never a decimal point: "1,5" is the list 1, 5 and "1,500" (three digits after
  the comma) is fifteen hundred. Reading "1,5" as 1.5 would let a list answer match a decimal
  gold, and the data here (GSM8K, MATH) writes decimals with a point.
- The same tolerance everywhere a number is compared (here and in the symbolic stage):
  exactly equal (to float precision where sympy evaluated it), or a decimal of at least six
  significant digits that is the other side's non-terminating exact value rounded or truncated
  at its last written place.
- Unicode minus (U+2212) and dashes, "π", "√", "∞", "°", "×", "≤", superscripts: math-verify
  fails to parse most of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

# Distinct gold answers whose parsed forms are kept (in the calling process for the fast
# paths, in each worker for sympy).
GOLD_CACHE_SIZE = 4096

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
    "\u00ac": "\\neg ",
    "\u2192": "\\to ",
    "\u21d2": "\\Rightarrow ",
    "\u27f9": "\\implies ",
    "\u21d4": "\\iff ",
    "\u2194": "\\leftrightarrow ",
    "\u2228": "\\lor ",
    "\u2248": "\\approx ",
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
_DECORATION = re.compile(r"\\(?:left|right|middle|[Bb]igg?[lrm]?)(?![A-Za-z])|\\displaystyle|\\textstyle")
# "30^\circ", "30^{\circ}", "30\degree"; a bare "\circ" only after a number ("f \circ g" is
# composition).
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|(?<=\d)\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|\^\{\\text\{o\}\}")
_PERCENT = re.compile(r"(?:\\?%|\\text\{\s*percent\s*\}|\bpercent)$")
# Trailing unit text: "\text{ cm}", "\mbox{ inches}^2", "\text{ dollars}".
_UNIT_TEXT = re.compile(
    r"\\(?:text|mbox|mathrm|textrm|textnormal|textbf|textit|textsf|texttt)\{\s*[A-Za-z][A-Za-z .]*\}(?:\s*\^\s*\{?\d\}?)?\s*$"
)
# Trailing unit words after a plain number: "18 dollars", "864 square inches", "20 km/h".
_UNIT_WORDS = re.compile(r"^(.*?\d)\s+[A-Za-z]{2,}(?:[ /][A-Za-z]+)*\.?(?:\s*\^\s*\{?\d\}?)?$")


_NEWLINE_BETWEEN_DIGITS = re.compile(r"(?<=\d)[ \t]*[\r\n]\s*(?=\d)")


def map_unicode(text: str) -> str:
    """Unicode mathematics as LaTeX (minus signs, pi, radicals, arrows, ...), full-width digits."""
    if text.isascii():
        return text
    s = text.translate(_FULLWIDTH_DIGITS)
    s = _UNICODE_SQRT.sub(lambda m: "\\sqrt{" + m.group(1).strip("(){}") + "}", s)
    return _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)


def normalize_answer(answer: str) -> str:
    """Canonical LaTeX-ish text of an extracted answer (still human-readable; see module doc)."""
    s = map_unicode(answer)
    # Two numbers on two lines are two numbers ("11\n5/6" is not the mixed number 11 5/6).
    if "\n" in s or "\r" in s:
        s = _NEWLINE_BETWEEN_DIGITS.sub(", ", s).replace("\n", " ").replace("\r", " ")
    s = s.replace("\t", " ")
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


@dataclass(frozen=True)
class Equation:
    """An answer written as a chain "name = v1 = v2" or "v1 = v2" ("\approx" links too).

    `name` is the quantity named on the left ("x", "f(3)", "\theta_1"), or None when the left
    side is itself a value ("3 + 2 = 5", "2x = 9"); `values` are the other sides, in order,
    and `approx` says which link before each value was "\approx" (only "=" links are checked).
    The answer is the last value.
    """

    name: str | None
    values: tuple[str, ...]
    approx: tuple[bool, ...]

    @property
    def is_chain(self) -> bool:
        return self.name is not None or len(self.values) > 1


# A named quantity: a letter or Greek letter (not \pi or \infty), or \text{word}, with an
# optional subscript, primes and an argument list: x, y_1, \theta, f'(x), P(A), \text{area}.
_ONE_NAME = (
    r"(?:[A-Za-z]|\\(?!pi(?![A-Za-z])|infty(?![A-Za-z]))[A-Za-z]+|\\(?:text|mathrm|operatorname)\{[A-Za-z][A-Za-z ]*\})"
    r"(?:_\{?[A-Za-z0-9]+\}?)?(?:'+|\^\{?\\prime\}?)?"
)
# ... or a tuple of such names: "(x, y) = (5, 8)".
_NAME = re.compile(rf"^(?:{_ONE_NAME}(?:\([^()=]*\))?|\(\s*{_ONE_NAME}(?:\s*,\s*{_ONE_NAME})+\s*\))$")
_APPROX = re.compile(r"\\approx(?![A-Za-z])")


def _top_level_splits(s: str, at) -> list[int]:
    r"""Indices i where at(s, i) holds outside (), [], {} and set braces \{ \}."""
    out, depth, i, n = [], 0, 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if i + 1 < n and s[i + 1] in "{}":
                depth = depth + 1 if s[i + 1] == "{" else max(0, depth - 1)
            i += 2  # an escaped character or the first letter of a command
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and at(s, i):
            out.append(i)
        i += 1
    return out


def top_level_split(s: str, sep: str) -> list[str]:
    """`s` split at the one-character separator `sep` where it stands outside brackets."""
    cuts = _top_level_splits(s, lambda t, i: t[i] == sep)
    bounds = [-1, *cuts, len(s)]
    return [s[a + 1 : b].strip() for a, b in zip(bounds, bounds[1:])]


def _equals_sign(s: str, i: int) -> bool:
    # "=" alone: not part of <=, >=, !=, ==, :=
    return s[i] == "=" and (i == 0 or s[i - 1] not in "<>!=:") and (i + 1 >= len(s) or s[i + 1] != "=")


def split_equation(normalized: str) -> Equation:
    """'x = 5' -> Equation('x', ('5',)); 'x = 3 + 2 = 5' -> ('x', ('3 + 2', '5')); '10 = 9' ->
    (None, ('10', '9')); anything without a top-level '=' or '\approx' -> (None, (text,))."""
    marked = _APPROX.sub(lambda m: "\0" + " " * (len(m.group(0)) - 1), normalized)
    cuts = _top_level_splits(marked, lambda t, i: t[i] == "\0" or _equals_sign(t, i))
    if not cuts:
        return Equation(None, (normalized.strip(),), (False,))
    parts, approx, at = [], [], 0
    for c in cuts:
        parts.append(normalized[at:c].strip())
        approx.append(marked[c] == "\0")
        at = c + (len("\\approx") if marked[c] == "\0" else 1)
    parts.append(normalized[at:].strip())
    if _NAME.match(parts[0]):
        return Equation(parts[0], tuple(parts[1:]), tuple(approx))
    return Equation(None, tuple(parts), (False, *approx))


_LIST_WORD = re.compile(r"\\text\{\s*(?:and|or)\s*\}|(?<![\\A-Za-z])(?:and|or)(?![A-Za-z])")


def _list_separator(t: str, i: int) -> bool:
    """A "," or ";" that separates values: not a thousands separator ("1,000")."""
    if t[i] == ";":
        return True
    if t[i] != ",":
        return False
    thousands = i > 0 and t[i - 1].isdigit() and re.match(r"\d{3}(?!\d)", t[i + 1 :]) is not None
    return not thousands


def list_items(normalized: str) -> list[str]:
    """The values of an answer that lists several ("1, 2", "x = 2 or x = -3", "1; 2"), each
    as text; [normalized] for a single value. A tuple, interval or set is one value."""
    marked = _LIST_WORD.sub(lambda m: "," + " " * (len(m.group(0)) - 1), normalized)
    cuts = _top_level_splits(marked, _list_separator)
    if not cuts:
        return [normalized.strip()]
    bounds = [-1, *cuts, len(marked)]
    items = [marked[a + 1 : b].strip() for a, b in zip(bounds, bounds[1:])]
    return [it for it in items if it]


def answer_form(normalized: str) -> tuple[Equation, ...]:
    """An answer as its listed values, each as an equation chain (a plain value is a chain of
    one): "x = 2 or x = -3" -> (x: 2), (x: -3)."""
    return tuple(split_equation(item) for item in list_items(normalized))


def is_multi_valued(normalized: str) -> bool:
    r"""Does a (gold) answer hold several values? A list ("1, 2", "1 and 2"; "1,000" is one
    number), a set \{..\} of several, \pm / \mp, a union."""
    if re.search(r"\\(?:pm|mp|cup)(?![A-Za-z])", normalized):
        return True
    return len(list_items(_set_body(normalized.strip()))) > 1


def _set_body(s: str) -> str:
    """The inside of a set written \\{..\\} or, sloppily, {..} around the whole answer."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return s[2:-2]
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        return s[1:-1]
    return s


# ---------------------------------------------------------------------------------------------
# answers that do not commit

# Words that hedge, negate or disown the value next to them ("9 (or 10)", "not 9", "9 is
# wrong"), and LaTeX that does the same (negation, implication arrows, logical or, "?").
_HEDGE_WORDS = frozenset(
    "or not no nor either neither maybe perhaps possibly probably unless except but if otherwise "
    "instead wrong incorrect false never cannot isnt isn't unsure guess".split()
)
_HEDGE_COMMANDS = {
    "neg": "not",
    "lnot": "not",
    "not": "not",
    "ne": "neq",
    "neq": "neq",
    "notin": "notin",
    "nless": "nless",
    "ngtr": "ngtr",
    "nleq": "nleq",
    "ngeq": "ngeq",
    "nleqslant": "nleq",
    "ngeqslant": "ngeq",
    "to": "to",
    "rightarrow": "to",
    "longrightarrow": "to",
    "Rightarrow": "implies",
    "Longrightarrow": "implies",
    "implies": "implies",
    "impliedby": "impliedby",
    "Leftarrow": "impliedby",
    "leftarrow": "from",
    "gets": "from",
    "iff": "iff",
    "Leftrightarrow": "iff",
    "leftrightarrow": "iff",
    "Longleftrightarrow": "iff",
    "mapsto": "to",
    "lor": "or",
    "vee": "or",
}
_COMMAND = re.compile(r"\\([A-Za-z]+)")
_ANY_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]+(?:'[a-z]+)?")


_MAYBE_HEDGE = re.compile(r"[A-Za-z?]|[!<=]>?=|<>")


def hedge_tokens(text: str) -> frozenset[str]:
    """The hedging, negating or pointing words, commands and symbols in `text` (canonical)."""
    if text.isascii() and not _MAYBE_HEDGE.search(text):
        return frozenset()  # digits and operators only: the common case, decided cheaply
    text = map_unicode(text)
    tokens = {w.lower() for w in _ANY_WORD.findall(text) if w.lower() in _HEDGE_WORDS}
    tokens |= {_HEDGE_COMMANDS[c] for c in _COMMAND.findall(text) if c in _HEDGE_COMMANDS}
    for symbol, token in (("?", "?"), ("!=", "neq"), ("=/=", "neq"), ("<>", "neq")):
        if symbol in text:
            tokens.add(token)
    return frozenset(tokens)


def commitment_problem(answer: str, gold_tokens: frozenset[str], gold_multi: bool) -> str | None:
    """Why `answer` does not commit to a value, or None.

    An answer that hedges ("9 \text{ (or } 10)", "18 or nineteen"), negates ("\neg 9", "9 is
    not the answer", "\ne 9"), asks ("9?") or points elsewhere ("10 \to 9") is wrong, whatever
    value it mentions: a policy must not earn a reward by naming the gold beside a way out.
    What the gold answer itself contains (`gold_tokens`: hedge_tokens of the gold) is allowed
    (a gold "x \ne 2" or "\text{no}"), and "or" is allowed between values when the gold has
    several ("x = 2 or x = -3").
    """
    for token in sorted(hedge_tokens(answer)):
        if token in gold_tokens or (token == "or" and gold_multi):
            continue
        return f"the answer does not commit to a value ({token!r})"
    return None


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


def terminates(value: Fraction) -> bool:
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


# A decimal stands for a non-terminating value only when written with this many significant
# digits (1/3 ~ 0.333333); fewer is a rounding the problem did not ask for. Six matches
# math-verify's float_rounding=6 for values of order one.
MIN_SIGNIFICANT_FOR_APPROX = 6


def rounds_to(exact: Fraction, approx: PlainNumber) -> bool:
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
            and not terminates(exact.value)
            and rounds_to(exact.value, approx)
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
