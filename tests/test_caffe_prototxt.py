"""The prototxt reader: values, nesting, and file:line:column errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from nncompress.errors import FormatError
from nncompress.interop.prototxt import Ident, PrototxtError, parse_file, parse_text


def test_values_nesting_and_repeats() -> None:
    text = """
    name: "Le" 'Net'   # adjacent strings join
    layer { name: "a" num: -3 f: 1e-5 g: 2.5f h: 0x10 pool: MAX ok: true }
    layer < name: "b" dims: [1, 2, 3] >
    """
    msg = parse_text(text, "n.prototxt")
    assert msg.get_str("name") == "LeNet"
    a, b = msg.messages("layer")
    assert (a.get_int("num"), a.get_float("f"), a.get_float("g"), a.get_int("h")) == \
        (-3, 1e-5, 2.5, 16)
    assert isinstance(a.last("pool").value, Ident)  # type: ignore[union-attr]
    assert a.get_enum("pool", ("MAX", "AVE"), "AVE") == "MAX" and a.get_bool("ok") is True
    assert b.ints("dims") == [1, 2, 3] and b.get_str("name") == "b"
    assert a.last("num").where == "n.prototxt:3:28"  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "message"), [
    ("a: 1\nb {\n c: 2\n", "f.prototxt:4:1: missing '}' to close the message opened at "
                          "f.prototxt:2:1"),
    ("a 1", "f.prototxt:1:3: expected ':' or '{' after field name 'a', found '1'"),
    ('a: "x', "f.prototxt:1:4: unterminated string (add the closing quote)"),
    ("a: 1\n  b: @", "f.prototxt:2:6: unexpected character '@'"),
    ("x: [1, 2 3]", "f.prototxt:1:10: expected ',' or ']' in list, found '3'"),
    ("a: 1 }", "f.prototxt:1:6: expected a field name, found '}'"),
])
def test_malformed_text_names_file_line_column(text: str, message: str) -> None:
    with pytest.raises(PrototxtError) as info:
        parse_text(text, "f.prototxt")
    assert str(info.value) == message


def test_wrong_kind_points_at_the_value() -> None:
    msg = parse_text('p {\n  num_output: "ten"\n}', "n.prototxt")
    with pytest.raises(PrototxtError) as info:
        msg.message("p").get_int("num_output")  # type: ignore[union-attr]
    assert str(info.value) == "n.prototxt:2:15: field 'num_output' expects an integer, got 'ten'"
    with pytest.raises(PrototxtError, match="expects one of MAX, AVE, got 'MIN'"):
        parse_text("pool: MIN").get_enum("pool", ("MAX", "AVE"), "MAX")


def test_missing_file_names_its_path(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as info:
        parse_file(tmp_path / "nope.prototxt", "net prototxt")
    assert str(info.value) == f"net prototxt not found: {tmp_path / 'nope.prototxt'}"


def test_deep_nesting_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(PrototxtError) as info:
        parse_text("a {" * 5000 + "}" * 5000, "deep.prototxt")
    assert str(info.value) == "deep.prototxt:1:301: messages nested more than 100 deep"
    assert parse_text("a {" * 50 + "}" * 50).fields[0].name == "a"
