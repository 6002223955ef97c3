"""Finding the final answer in a model's response (pure string work, linear time).

Anchoring: which part of a response is its answer. Each rule is a convention; the reason is
what a policy under RL would do with the alternative.

1. ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces; ``\\boxed 5`` too): the last complete
   box. A box that never closes (a generation cut off at the length limit) does not count.
   When the last boxes form one group at the end (only commas, "and"/"or", spaces or math
   delimiters between them: ``$\\boxed{1}$ and $\\boxed{2}$``) the group is kept as well, and
   the comparison reads it as a set when the gold answer has several values. Otherwise only
   the last box counts: listing candidates never earns more than committing to one of them.
2. A "final answer" phrase ("Final Answer: ...", "the final answer is ...") after the last
   box overrides it: the model revised its answer, and the last statement is what it commits
   to. GSM8K's ``#### N`` line is such a marker too; the latest of a box, a final-answer
   phrase and a ``####`` line wins.
3. Otherwise the last "answer is X" / "Answer: X". These generic phrases never override a box
   ("the answer is clear" after a box is prose, not an answer).
4. Otherwise the whole response when it is a bare answer (one short line that is not prose).
5. Opt-in (`fallback_last_number`): the last number in the text. Off by default: it rewards
   guessing.

What a phrase yields: a math span right after it (``$...$``, ``\\(...\\)``, ``\\[...\\]``); else
its sentence, cut at a ", because"-style clause; and when that sentence is prose ("The
largest $n$ is 34") the value after its last "is"/"are"/"equals"/"=". Dollar signs escaped as
``\\$`` are currency, never math delimiters (``$\\$36$`` is 36).

Every scan here is linear in the length of the response: responses come from a policy being
trained and can be megabytes of garbage, so no regex with nested or adjacent unbounded
quantifiers that can fail is used, and brace matching is one pass with an explicit stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

AnswerSource = Literal["boxed", "final", "hash", "answer_is", "bare", "last_number"]

# The longest response line still accepted as a bare answer ("3", "\frac{\pi}{6}", ...).
MAX_BARE_ANSWER_CHARS = 300
# Boxes whose gap is longer than this are not one answer group.
MAX_GROUP_GAP_CHARS = 60

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "Final Answer:", "the final answer is", "**Final answer**:", "**Final answer**" + newline.
_FINAL_ANCHOR = re.compile(r"(?i)\bfinal\s+answer\b[ \t*]*(?:is\b|was\b|:|=|\n)[ \t*:]*")
# "answer is", "Answer:", "answer =", "**Answer:**", "answer is:" (one character class
# between the word and the verb: adjacent `\s*` groups would backtrack quadratically).
_ANSWER_ANCHOR = re.compile(r"(?i)\banswer\b[ \t*]*(?:is\b|:|=)[ \t*:]*")
# A number as people write it: sign, thousands separators, decimals, a plain a/b fraction.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?|-?\.\d+")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_CLAUSE_AFTER_COMMA = re.compile(r",\s+(?!(?:and|or)\b)[A-Za-z]{2,}")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textnormal|textrm|textsf|texttt|mathrm|mbox|textit|operatorname)\{[^{}]*\}")
# The verb of a prose answer sentence: the value follows its last occurrence.
_COPULA = re.compile(r"(?i)(?:\s(?:is|are|was|equals|be)\s|=)")
# What may stand between two boxes of one answer group.
_GROUP_GAP = re.compile(r"(?:\s|\$|,|;|&|\\\\|\\[,;:! ]|\\q?quad|\\text\{\s*(?:and|or)\s*\}|\band\b|\bor\b|\\\(|\\\)|\\\[|\\\])*")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)


@dataclass(frozen=True)
class ExtractedAnswer:
    text: str
    source: AnswerSource
    # The boxes of the final group, in order, when it has more than one (`text` is the last).
    group: tuple[str, ...] | None = None


# ---------------------------------------------------------------------------------------------
# braces, boxes and math spans


def matching_braces(text: str) -> dict[int, int]:
    """Index of each unescaped '{' -> index of its '}' (unclosed ones absent); one linear pass.

    An escaped brace (\\{ or \\}) opens or closes nothing: the scan consumes each backslash
    together with the character after it (so the brace of ``\\\\{`` still counts).
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN.finditer(text):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def boxes(text: str) -> list[tuple[int, int, str]]:
    """Every complete top-level ``\\boxed``/``\\fbox``: (start, end after it, content), in order.

    Boxes inside a box belong to it (``\\boxed{\\boxed{8}}`` is one box); an unclosed box is
    skipped and the boxes after its opening still count.
    """
    if "box" not in text:  # neither \boxed nor \fbox, in one C-speed scan
        return []
    out: list[tuple[int, int, str]] = []
    pairs: dict[int, int] | None = None
    inside_until = -1
    n = len(text)
    for m in _BOX_START.finditer(text):
        if m.start() < inside_until:
            continue
        j = m.end()
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "{":
            if pairs is None:
                pairs = matching_braces(text)
            end = pairs.get(j)
            if end is not None:
                out.append((m.start(), end + 1, text[j + 1 : end]))
                inside_until = end + 1
        elif j > m.end():  # "\boxed 5": one token up to whitespace or a math delimiter
            token = re.match(r"[^\s$]+", text[j : j + MAX_BARE_ANSWER_CHARS])
            if token:
                out.append((m.start(), j + token.end(), token.group(0)))
                inside_until = j + token.end()
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last complete box, else None."""
    found = boxes(text)
    return found[-1][2] if found else None


def _final_group(text: str, found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    group = [found[-1]]
    for prev in reversed(found[:-1]):
        gap = text[prev[1] : group[0][0]]
        if len(gap) > MAX_GROUP_GAP_CHARS or _GROUP_GAP.fullmatch(gap) is None:
            break
        group.insert(0, prev)
    return group


def _is_escaped(text: str, i: int) -> bool:
    """Is text[i] preceded by an odd number of backslashes?"""
    k = i
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (i - k) % 2 == 1


def _find_unescaped(text: str, needle: str, start: int) -> int:
    """Index of the next `needle` at or after `start` not escaped by a backslash (-1: none).
    Only `$` delimiters can be escaped (``\\$`` is a dollar sign)."""
    i = text.find(needle, start)
    while i != -1 and needle.startswith("$") and _is_escaped(text, i):
        i = text.find(needle, i + 1)
    return i


_MATH_OPENERS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _leading_math_span(s: str) -> tuple[str, int] | None:
    """(content, index after the closer) when `s` starts with a complete math span."""
    if s[:1] not in ("$", "\\"):
        return None
    for open_, close in _MATH_OPENERS:
        if s.startswith(open_) and not (open_ == "$" and s.startswith("$$")):
            end = _find_unescaped(s, close, len(open_))
            if end != -1:
                return s[len(open_) : end], end + len(close)
    return None


def math_span_ranges(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of each math span of `text` in order (``$..$``, ``$$..$$``,
    ``\\(..\\)``, ``\\[..\\]``); escaped dollars are currency. Unclosed spans are not spans."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and not _is_escaped(text, i):
            span = _leading_math_span(text[i:])
        elif c == "\\" and i + 1 < n and text[i + 1] in "([" and not _is_escaped(text, i):
            span = _leading_math_span(text[i:])
        else:
            i += 1
            continue
        if span is None:
            i += 2 if text.startswith("$$", i) else 1
            continue
        out.append((i, i + span[1], span[0]))
        i += span[1]
    return out


def math_spans(text: str) -> list[str]:
    """Contents of the math spans of `text`, in order."""
    return [content for _, _, content in math_span_ranges(text)]


def _outside_math(text: str, fill: str = " ") -> str:
    """`text` with every math span replaced by `fill` characters (same length)."""
    ranges = math_span_ranges(text)
    if not ranges:
        return text
    parts, at = [], 0
    for start, end, _ in ranges:
        parts.append(text[at:start])
        parts.append(fill * (end - start))
        at = end
    parts.append(text[at:])
    return "".join(parts)


def strip_math_delimiters(s: str) -> str:
    """The content of the math span `s` starts with (text after its closer is dropped), else `s`."""
    s = s.strip()
    span = _leading_math_span(s)
    return span[0].strip() if span is not None else s


# ---------------------------------------------------------------------------------------------
# anchors


def _hash_answer(text: str) -> tuple[int, str] | None:
    i = text.rfind("####")
    while i != -1:
        line = text[i + 4 :].split("\n", 1)[0].strip()
        if line:
            return i, line
        i = text.rfind("####", 0, i)
    return None


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def _words_outside_math(text: str) -> int:
    return len(_WORD.findall(_TEXT_CMD.sub(" ", _outside_math(text))))


def _value_after_copula(sentence: str) -> str | None:
    """The part after the last "is"/"are"/"equals"/"=" that lies outside math spans."""
    last = _last_match(_COPULA, _outside_math(sentence, "\0"))
    if last is None:
        return None
    return sentence[last.end() :].strip() or None


def _states_a_value(text: str) -> bool:
    """Does a phrase's answer look like mathematics (a digit, a LaTeX command or a math span)?
    A final-answer phrase overrides an earlier box only then: "so the final answer is indeed
    right" after a box is a comment, "the final answer is 7" a revision."""
    return any(c.isdigit() or c == "\\" for c in text) or bool(math_span_ranges(text))


def _phrase_answer(rest: str) -> str | None:
    """What follows an answer phrase: a leading math span, else the sentence (see module doc)."""
    rest = rest.lstrip()
    span = _leading_math_span(rest)
    if span is not None:
        return _unwrap_box(span[0].strip()) or None
    m = _SENTENCE_END.search(rest)
    sentence = rest[: m.start()] if m else rest
    # "the answer is 5, because ..." (but not "1, 2, and 3" or "x = 2, y = 3")
    m = _CLAUSE_AFTER_COMMA.search(sentence)
    answer = (sentence[: m.start()] if m else sentence).strip().rstrip(".").strip()
    if _words_outside_math(answer) > 2:  # prose: "The largest $n$ is 34"
        value = _value_after_copula(answer)
        spans = math_spans(answer)
        numbers = _NUMBER.findall(_outside_math(answer))
        if value is not None:
            answer = value
        elif spans:
            answer = spans[-1]
        elif len(numbers) == 1:  # "Jane started 3 hours ago": the one number it states
            answer = numbers[0]
    return strip_math_delimiters(answer) or None


def _unwrap_box(inner: str) -> str:
    """ "\\boxed{\\boxed{5}}" and "\\boxed{$5$}" occur in model output: the innermost answer."""
    inner = inner.strip()
    while inner.startswith(("\\boxed", "\\fbox")):
        again = last_boxed(inner)
        if again is None:
            break
        inner = again.strip()
    return strip_math_delimiters(inner)


def _labelled_span(text: str) -> str | None:
    """ "Answer $9$", "Result: \\[ x = 2 \\]": one math span and at most two words around it
    (a label, not prose) is that span's content."""
    if len(text) > 4 * MAX_BARE_ANSWER_CHARS:
        return None
    ranges = math_span_ranges(text)
    if len(ranges) != 1:
        return None
    start, end, content = ranges[0]
    if "\n" in content and not text.startswith(("$$", "\\["), start):
        return None  # inline math ($..$, \(..\)) does not run across lines
    outside = (text[:start] + " " + text[end:]).strip().rstrip(".").strip()
    if not outside or "\n" in outside or len(_WORD.findall(outside)) > 2 or any(c.isdigit() for c in outside):
        return None
    return content.strip() or None


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


def find_answer(response: str, *, fallback_last_number: bool = False) -> ExtractedAnswer | None:
    """The final answer in `response` and which anchor found it, or None (rules: module doc)."""
    if not isinstance(response, str):
        raise TypeError(f"response must be str, got {type(response).__name__}")
    candidates: list[tuple[int, ExtractedAnswer | None]] = []  # (position, answer)
    found = boxes(response)
    if found:
        group = _final_group(response, found)
        texts = tuple(_unwrap_box(b[2]) for b in group)
        answer = ExtractedAnswer(texts[-1], "boxed", texts if len(texts) > 1 else None) if texts[-1] else None
        candidates.append((group[0][0], answer))
    # Every spelling of "answer" contains "nswer" or "NSWER": a C-speed test before the regex.
    mentions_answer = "nswer" in response or "NSWER" in response
    final = _last_match(_FINAL_ANCHOR, response) if mentions_answer else None
    if final is not None:
        text = _phrase_answer(response[final.end() :])
        if text and (not found or _states_a_value(text)):
            candidates.append((final.start(), ExtractedAnswer(text, "final")))
    hashed = _hash_answer(response)
    if hashed is not None:
        text = strip_math_delimiters(hashed[1])
        candidates.append((hashed[0], ExtractedAnswer(text, "hash") if text else None))
    if candidates:
        # The latest marker is what the response ends up committing to (even when it is empty).
        return candidates[0][1] if len(candidates) == 1 else max(candidates, key=lambda c: c[0])[1]
    said = _last_match(_ANSWER_ANCHOR, response) if mentions_answer else None
    if said is not None:
        text = _phrase_answer(response[said.end() :])
        if text is not None:
            return ExtractedAnswer(text, "answer_is")
    text = response.strip().strip("*").strip()
    labelled = _labelled_span(text)
    if labelled is not None:
        return ExtractedAnswer(labelled, "bare")
    bare = strip_math_delimiters(text)
    if _is_bare_answer(bare):
        return ExtractedAnswer(bare.rstrip(".").strip(), "bare")
    if fallback_last_number:
        number = _last_match(_NUMBER, response)
        if number is not None:
            return ExtractedAnswer(number.group(0), "last_number")
    return None


def gold_answer_text(gold: str) -> str:
    """The answer inside a gold label: the label itself, or its ``\\boxed{}`` / ``#### N``.

    Lets a dataset's reference solution serve as the gold (GSM8K's `answer` field ends in
    ``#### N``; MATH solutions box their answer). A gold with several answers in several
    boxes or math spans ("$1$ and $2$") keeps all of them, as a comma-separated list.
    """
    if not isinstance(gold, str):
        raise TypeError(f"gold must be str, got {type(gold).__name__}")
    found = boxes(gold)
    if found:
        return ", ".join(_unwrap_box(b[2]) for b in _final_group(gold, found))
    hashed = _hash_answer(gold)
    if hashed is not None:
        return strip_math_delimiters(hashed[1])
    if "nswer" in gold or "NSWER" in gold:  # a reference solution ending "Final Answer: ..."
        anchor = _last_match(_FINAL_ANCHOR, gold) or _last_match(_ANSWER_ANCHOR, gold)
        said = _phrase_answer(gold[anchor.end() :]) if anchor is not None else None
        if said is not None:
            return said
    spans = [s.strip() for s in math_spans(gold)]
    if len(spans) > 1:
        return ", ".join(s for s in spans if s)
    return strip_math_delimiters(gold)
