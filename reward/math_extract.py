"""Finding the final answer in a model's response (pure string work, linear time).

Anchors, strongest first:

1. the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces; ``\\boxed 5`` too),
2. the last GSM8K ``#### N`` line,
3. the last "answer is X" / "Answer: X" / "final answer is X",
4. the whole response when it is a bare answer (one short line that is not prose),
5. opt-in: the last number in the text.

Every scan here is linear in the length of the response: responses come from a policy being
trained and can be megabytes of garbage, so no regex with nested or adjacent unbounded
quantifiers is used, and brace matching is one pass with an explicit stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

AnswerSource = Literal["boxed", "hash", "answer_is", "bare", "last_number"]

# The longest response line still accepted as a bare answer ("3", "\frac{\pi}{6}", ...).
MAX_BARE_ANSWER_CHARS = 300

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "answer is", "Answer:", "final answer =", "**Answer:**", "answer is:" (one character class
# between the word and the verb: adjacent `\s*` groups would backtrack quadratically).
_ANSWER_ANCHOR = re.compile(r"(?i)\banswer\b[ \t*]*(?:is\b|:|=)[ \t*:]*")
# A number as people write it: sign, thousands separators, decimals, a plain a/b fraction.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|-?\.\d+")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_CLAUSE_AFTER_COMMA = re.compile(r",\s+(?!(?:and|or)\b)[A-Za-z]{2,}")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|mathrm|mbox|textit|operatorname)\{[^{}]*\}")
_MATH_OPENERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


@dataclass(frozen=True)
class ExtractedAnswer:
    text: str
    source: AnswerSource


def matching_braces(text: str) -> dict[int, int]:
    """Map the index of each unescaped '{' to the index of its '}' (unclosed ones are absent).

    One pass with a list as stack, so a million nested braces cost no recursion.
    """
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in re.finditer(r"[{}]", text):
        i = m.start()
        # \{ and \} are literal braces of a set, not grouping.
        if i > 0 and text[i - 1] == "\\" and not (i > 1 and text[i - 2] == "\\"):
            continue
        if text[i] == "{":
            stack.append(i)
        elif stack:
            pairs[stack.pop()] = i
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{}``/``\\fbox{}`` (``\\boxed 5`` too), else None.

    A box that never closes (a truncated generation) does not count; the last complete box
    before it does.
    """
    starts = [m.end() for m in _BOX_START.finditer(text)]
    if not starts:
        return None
    pairs: dict[int, int] | None = None
    for pos in reversed(starts):
        j = pos
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            if pairs is None:
                pairs = matching_braces(text)
            end = pairs.get(j)
            if end is not None:
                return text[j + 1 : end]
        elif j > pos:  # "\boxed 5": one token up to whitespace or a math delimiter
            m = re.match(r"[^\s$]+", text[j : j + MAX_BARE_ANSWER_CHARS])
            if m:
                return m.group(0)
    return None


def _hash_answer(text: str) -> str | None:
    i = text.rfind("####")
    while i != -1:
        line = text[i + 4 :].split("\n", 1)[0].strip()
        if line:
            return line
        i = text.rfind("####", 0, i)
    return None


def _strip_math_delimiters(s: str) -> str:
    s = s.strip()
    for open_, close in _MATH_OPENERS:
        if s.startswith(open_):
            end = s.find(close, len(open_))
            if end != -1:
                return s[len(open_) : end].strip()
    return s


def _answer_is(text: str) -> str | None:
    last = None
    for last in _ANSWER_ANCHOR.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() :].lstrip()
    for open_, close in _MATH_OPENERS:
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            if end != -1:
                return rest[len(open_) : end].strip() or None
    m = _SENTENCE_END.search(rest)
    answer = rest[: m.start()] if m else rest
    # "the answer is 5, because ..." (but not "1, 2, and 3" or "x = 2, y = 3")
    m = _CLAUSE_AFTER_COMMA.search(answer)
    answer = (answer[: m.start()] if m else answer).strip().rstrip(".").strip()
    return _strip_math_delimiters(answer) or None


def _is_bare_answer(text: str) -> bool:
    """One short line that reads like mathematics, not prose.

    Prose is detected by words: more than two alphabetic words of two or more letters outside
    LaTeX commands and \\text{} ("18 dollars", "x \\in [-2, 7]", "\\text{Evelyn}" pass;
    "I think it is 5" does not).
    """
    if not text or "\n" in text or len(text) > MAX_BARE_ANSWER_CHARS:
        return False
    without_text = _TEXT_CMD.sub(" ", text)
    return len(_WORD.findall(without_text)) <= 2


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return last.group(0) if last else None


def find_answer(response: str, *, fallback_last_number: bool = False) -> ExtractedAnswer | None:
    """The final answer in `response` and which anchor found it, or None."""
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    boxed = last_boxed(response)
    if boxed is not None:
        # "\boxed{\boxed{5}}" and "\boxed{$5$}" occur in model output.
        inner = boxed.strip()
        while True:
            again = last_boxed(inner)
            if again is None or not inner.startswith(("\\boxed", "\\fbox")):
                break
            inner = again.strip()
        inner = _strip_math_delimiters(inner)
        return ExtractedAnswer(inner, "boxed") if inner else None
    hashed = _hash_answer(response)
    if hashed is not None:
        return ExtractedAnswer(_strip_math_delimiters(hashed), "hash")
    said = _answer_is(response)
    if said is not None:
        return ExtractedAnswer(said, "answer_is")
    bare = _strip_math_delimiters(response.strip().strip("*").strip())
    if _is_bare_answer(bare):
        return ExtractedAnswer(bare.rstrip(".").strip(), "bare")
    if fallback_last_number:
        number = _last_number(response)
        if number is not None:
            return ExtractedAnswer(number, "last_number")
    return None


def gold_answer_text(gold: str) -> str:
    """The answer inside a gold label: the label itself, or its ``\\boxed{}`` / ``#### N``.

    Lets a dataset's reference solution serve as the gold (GSM8K's `answer` field ends in
    ``#### N``; MATH solutions box their answer).
    """
    if not isinstance(gold, str):
        raise TypeError(f"gold must be str, got {type(gold).__name__}")
    boxed = last_boxed(gold)
    if boxed is not None:
        return _strip_math_delimiters(boxed)
    hashed = _hash_answer(gold)
    if hashed is not None:
        return _strip_math_delimiters(hashed)
    return _strip_math_delimiters(gold)
