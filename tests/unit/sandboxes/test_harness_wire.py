"""The values that cross between the grader and the program's process (sandboxes/harness.py)."""

from __future__ import annotations

import collections
import decimal
import fractions
import math

import pytest

from qwen25_rl.sandboxes import harness


class AlwaysEqual:
    def __eq__(self, other):
        return True

    def __bool__(self):
        return True


class FakeInt(int):
    def __eq__(self, other):
        return True


class FakeConn:
    generation = 0


def roundtrip(value, refs=None):
    refs = refs if refs is not None else {}

    def to_ref(obj):
        refs[len(refs) + 1] = obj
        return {"$ref": len(refs)}

    wire = harness.Encoder(to_ref).enc(value)
    wire = harness.loads(harness.dumps(wire))  # through the same JSON as the pipe
    return harness.Decoder(lambda rid: harness.RemoteRef(rid, "object", FakeConn())).dec(wire)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -7,
        2**70,
        -(2**200),
        1.5,
        -0.0,
        "héllo\u2028\ud800",
        b"\x00\xff",
        bytearray(b"ab"),
        [1, [2, [3]]],
        (1, (2,)),
        {"a": 1, 2: [3], (4, 5): {6}},
        {1, 2},
        frozenset({"x"}),
        3 + 4j,
        range(1, 10, 3),
        collections.Counter("abca"),
        collections.OrderedDict(a=1),
        collections.deque([1, 2]),
        decimal.Decimal("1.10"),
        fractions.Fraction(3, 7),
        int,
        str,
    ],
)
def test_plain_values_roundtrip_with_their_exact_type(value):
    out = roundtrip(value)
    assert out == value and type(out) is type(value)


def test_special_floats_roundtrip():
    assert roundtrip(float("inf")) == float("inf")
    assert math.isnan(roundtrip(float("nan")))


def test_iterators_arrive_as_iterators_over_the_same_items():
    out = roundtrip(map(str, [1, 2]))
    assert list(out) == ["1", "2"]
    assert list(roundtrip(x * x for x in range(4))) == [0, 1, 4, 9]
    assert roundtrip({"a": 1}.keys()) == {"a": 1}.keys()


def test_an_always_equal_object_arrives_as_a_handle_that_equals_nothing_else():
    out = roundtrip(AlwaysEqual())
    assert type(out) is harness.RemoteRef
    assert out != 5 and not (out == "anything") and not (5 == out)
    with pytest.raises(TypeError):
        bool(out)


def test_a_subclass_of_int_with_a_forged_eq_is_not_treated_as_an_int():
    out = roundtrip(FakeInt(3))
    assert type(out) is harness.RemoteRef
    assert out != 3


def test_containers_holding_forged_objects_keep_them_as_handles():
    out = roundtrip([1, AlwaysEqual()])
    assert out[0] == 1 and type(out[1]) is harness.RemoteRef
    assert out != [1, 2]


@pytest.mark.parametrize(
    "wire",
    [
        {"a": 1},  # plain objects are never produced by the encoder
        {"$tuple": [1], "$set": [2]},
        {"$nope": 1},
        {"$int": 5},
        {"$float": "1.5"},
        {"$bytes": "zz"},
        {"$range": [1, 2]},
        {"$type": "eval"},
        {"$ref": "1"},
        {"$set": [[1, 2]]},  # unhashable element
    ],
)
def test_decoder_rejects_anything_the_encoder_does_not_produce(wire):
    dec = harness.Decoder(lambda rid: rid)
    with pytest.raises((harness.WireError, TypeError, ValueError)):
        dec.dec(wire)


def test_decoder_rejects_nesting_beyond_the_limit():
    deep = 1
    for _ in range(harness.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(harness.WireError):
        harness.Decoder(lambda rid: rid).dec(deep)


def test_json_loads_is_strict():
    assert harness.loads('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    for bad in ("[NaN]", "[1] x", "", "{'a': 1}", "[1,]"):
        with pytest.raises(ValueError):
            harness.loads(bad)
    with pytest.raises(ValueError):
        harness.loads("[" + "9" * 5000 + "]")  # Python's int-digits limit


def test_json_dumps_refuses_what_json_cannot_carry():
    assert harness.dumps({"a": [1, "é", None, False]}) == '{"a":[1,"\\u00e9",null,false]}'
    for bad in (float("nan"), {1: 2}, object()):
        with pytest.raises((ValueError, TypeError)):
            harness.dumps(bad)


def test_names_used_as_modules_and_called_names_are_found_without_re():
    src = "assert math.isclose(area(3), 1.5)\nx = obj.attr.more\nassert sum(1, 2) == 3.5"
    assert harness._dotted_names(src) == {"math", "obj"}
    assert harness._called_names(src) == {"area", "sum"}


def test_split_asserts_counts_asserts_outside_try_blocks():
    code, n = harness._split_asserts(
        "def check(c):\n    assert c(1)\n    try:\n        assert c(2)\n    except AssertionError:\n        pass\n    assert c(3)\n"
    )
    assert n == 2
