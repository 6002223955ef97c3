"""Find the program in a model's response: fenced blocks, the last complete block, bare code."""

from __future__ import annotations

import ast
import re

# ``` or ~~~ fences (three or more), an optional info string; the closing fence must use the
# same character and be at least as long (CommonMark).
_FENCE = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$", re.MULTILINE)
PYTHON_TAGS = {"", "python", "py", "python3", "py3", "ipython", "pycon"}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every COMPLETE fenced block as (language tag, body), in order. An unclosed last fence
    (a truncated generation) is not a block."""
    blocks = []
    pos = 0
    while True:
        m = _FENCE.search(text, pos)
        if m is None:
            return blocks
        fence = m.group("fence")
        lang = (m.group("info").strip().split() or [""])[0].lower()
        body_start = m.end() + 1
        close = re.compile(r"^[ \t]{0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$", re.MULTILINE)
        c = close.search(text, body_start)
        if c is None:
            return blocks
        blocks.append((lang, text[body_start : c.start()].rstrip("\n")))
        pos = c.end()


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def defines(code: str, name: str) -> bool:
    """Does `code` define `name` at top level (def/class/assignment)?"""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return bool(re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


_CODE_START = re.compile(r"^(def |async def |class |import |from |@|[A-Za-z_][A-Za-z0-9_]*\s*=|if __name__|for |while |print\()")


def _bare_code(text: str) -> str | None:
    """Code written without fences: the whole text if it parses, else the span from the first
    line that looks like code, shortened from the end until it parses."""
    stripped = text.strip("\n")
    if stripped.strip() and parses(stripped):
        return stripped
    lines = stripped.split("\n")
    starts = [i for i, ln in enumerate(lines) if _CODE_START.match(ln)]
    for start in starts[:5]:
        for end in range(len(lines), start, -1):
            cand = "\n".join(lines[start:end]).rstrip()
            if cand and parses(cand):
                return cand
    return None


def called_names(test_sources: list[str]) -> list[str]:
    """Names the tests call (`assert f(x) == 3` -> f), builtins excluded: the functions under test."""
    import builtins

    out: list[str] = []
    for src in test_sources:
        try:
            tree = ast.parse(src)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                name = node.func.id
                if not hasattr(builtins, name) and name not in out:
                    out.append(name)
    return out


def extract_code(response: str, *, entry_point: str | list[str] | None = None) -> str | None:
    """The program in a model response, or None.

    1. Fenced blocks tagged python (or untagged): the last complete one — or, when an
       `entry_point` (or a list of candidate names) is given, the last one that defines it, so
       that a final usage-example block does not replace the solution.
    2. No usable fence: bare code (see _bare_code).
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    blocks = [body for lang, body in fenced_blocks(response) if lang in PYTHON_TAGS and body.strip()]
    if blocks:
        names = [entry_point] if isinstance(entry_point, str) else list(entry_point or [])
        if names:
            for body in reversed(blocks):
                if any(defines(body, n) for n in names):
                    return body
        return blocks[-1]
    if _FENCE.search(response):
        # Only an unclosed fence (truncated answer): take what follows it if it parses.
        m = list(_FENCE.finditer(response))[-1]
        lang = (m.group("info").strip().split() or [""])[0].lower()
        if lang in PYTHON_TAGS:
            tail = response[m.end() + 1 :]
            code = _bare_code(tail)
            if code is not None:
                return code
        head = response[: m.start()]
        return _bare_code(head)
    return _bare_code(response)
