"""Registry: decorator registration, lookups that name the known entries, no silent overwrite."""

import pytest

from qwen25_rl.algorithms import Registry, UnknownNameError


def test_decorated_function_is_found_by_name_and_returned_unchanged():
    reg = Registry("widget")

    @reg.register("blue")
    def blue():
        return "blue"

    assert reg.get("blue") is blue and reg["blue"]() == "blue"
    assert list(reg) == ["blue"] and len(reg) == 1 and "blue" in reg


def test_unknown_name_error_lists_the_known_names():
    reg = Registry("widget")
    reg.register("a")(lambda: None)
    reg.register("b")(lambda: None)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")


def test_a_second_function_under_a_taken_name_is_refused():
    reg = Registry("widget")

    @reg.register("x")
    def first():
        pass

    with pytest.raises(ValueError, match="already registered"):

        @reg.register("x")
        def second():
            pass


def test_empty_name_is_refused():
    with pytest.raises(ValueError, match="non-empty string"):
        Registry("widget").register("")
