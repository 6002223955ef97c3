"""Finding the program in a model response."""

from __future__ import annotations

import pytest

from qwen25_rl.reward.code_extract import called_names, extract_code, fenced_blocks

SOLUTION = "def add(a, b):\n    return a + b"


def test_single_python_fence():
    assert extract_code(f"Sure!\n```python\n{SOLUTION}\n```\nDone.") == SOLUTION


def test_untagged_and_tilde_fences():
    assert extract_code(f"```\n{SOLUTION}\n```") == SOLUTION
    assert extract_code(f"~~~py\n{SOLUTION}\n~~~") == SOLUTION


def test_non_python_fences_are_ignored():
    assert extract_code(f"```text\nadd(1, 2) -> 3\n```\n```python\n{SOLUTION}\n```") == SOLUTION
    assert extract_code("```bash\nls -la\n```") is None


def test_last_complete_block_wins():
    first = "def add(a, b):\n    return a - b"
    assert extract_code(f"```python\n{first}\n```\nFixed:\n```python\n{SOLUTION}\n```") == SOLUTION


def test_a_trailing_usage_block_does_not_replace_the_solution_when_the_entry_point_is_known():
    resp = f"```python\n{SOLUTION}\n```\nUsage:\n```python\nprint(add(1, 2))\n```"
    assert extract_code(resp, entry_point="add") == SOLUTION
    assert extract_code(resp, entry_point=["missing", "add"]) == SOLUTION
    assert extract_code(resp) == "print(add(1, 2))"


def test_unclosed_fence_is_not_a_complete_block():
    assert fenced_blocks("```python\ndef f(:\n") == []
    # a truncated final block: its text is used only if it parses
    assert extract_code(f"```python\n{SOLUTION}\n") == SOLUTION
    assert extract_code("```python\ndef add(a, b):\n    return (a +") is None


def test_longer_fences_close_only_with_as_many_backticks():
    resp = f"````python\n{SOLUTION}\n```\nnot the end\n````"
    assert fenced_blocks(resp) == [("python", f"{SOLUTION}\n```\nnot the end")]


def test_bare_code_whole_response():
    assert extract_code(SOLUTION + "\n") == SOLUTION


def test_bare_code_after_prose():
    resp = f"Here is my solution:\n{SOLUTION}\n\nIt adds the numbers."
    assert extract_code(resp) == SOLUTION


def test_prose_only_has_no_code():
    assert extract_code("I cannot solve this problem, sorry!") is None
    assert extract_code("") is None


def test_non_string_response_is_an_error():
    with pytest.raises(TypeError):
        extract_code(None)  # type: ignore[arg-type]


def test_called_names_are_the_functions_under_test():
    assert called_names(["assert add(1, 2) == 3", "assert sorted(f(x)) == [1]"]) == ["add", "f"]
