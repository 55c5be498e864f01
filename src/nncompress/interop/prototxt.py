"""A small reader for the protobuf text format used by Caffe's ``.prototxt`` files.

It builds a schema-free tree of :class:`Message` objects (:mod:`.prototxt_tree`), remembering the
file, line and column of every field so that later checks (a wrong type, an unknown layer) can
point at the exact spot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nncompress.errors import FormatError
from nncompress.interop.prototxt_tree import Field, Ident, Message, PrototxtError

__all__ = ["Field", "Ident", "Message", "PrototxtError", "parse_file", "parse_text"]


# --- tokenizer ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?(?![\w.]))
  | (?P<ident>-?[A-Za-z_][\w.]*)
  | (?P<punct>[{}<>:\[\],;])
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


@dataclass
class _Token:
    kind: str
    text: str
    line: int
    col: int


def _tokens(text: str, source: str) -> Iterator[_Token]:
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            where = f"{source}:{line}:{col}"
            ch = text[pos]
            if ch in "\"'":
                raise PrototxtError(where, "unterminated string (add the closing quote)")
            raise PrototxtError(where, f"unexpected character {ch!r}")
        kind = m.lastgroup or ""
        if kind == "newline":
            line, line_start = line + 1, m.end()
        elif kind not in ("space", "comment"):
            yield _Token(kind, m.group(), line, col)
        pos = m.end()
    yield _Token("eof", "", line, pos - line_start + 1)


def _unquote(tok: _Token, source: str) -> str:
    body, out, i = tok.text[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:])
            assert digits is not None
            out.append(chr(int(digits.group(), 8)))
            i += 1 + len(digits.group())
        elif nxt in "xX" and re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            assert digits is not None
            out.append(chr(int(digits.group(), 16)))
            i += 2 + len(digits.group())
        else:
            where = f"{source}:{tok.line}:{tok.col + i + 1}"
            raise PrototxtError(where, f"unknown escape sequence '\\{nxt}' in string")
    return "".join(out)


def _number(text: str) -> int | float:
    body = text[:-1] if text[-1] in "fF" and not text.lower().startswith(("0x", "-0x", "+0x")) \
        else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?\d+", body) and text[-1] not in "fF":
        return int(body)
    return float(body)


# --- parser --------------------------------------------------------------------------------------

_MAX_DEPTH = 100  # Caffe nets nest 3 or 4 deep; the bound keeps recursion far from Python's


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.toks = list(_tokens(text, source))
        self.i = 0
        self.depth = 0

    def where(self, tok: _Token) -> str:
        return f"{self.source}:{tok.line}:{tok.col}"

    def peek(self) -> _Token:
        return self.toks[self.i]

    def take(self) -> _Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def error(self, tok: _Token, message: str) -> PrototxtError:
        shown = "end of file" if tok.kind == "eof" else repr(tok.text)
        return PrototxtError(self.where(tok), f"{message}, found {shown}")

    def parse_body(self, msg: Message, closing: str | None) -> None:
        if closing is not None:
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise PrototxtError(msg.where, f"messages nested more than {_MAX_DEPTH} deep")
        try:
            self._parse_fields(msg, closing)
        finally:
            if closing is not None:
                self.depth -= 1

    def _parse_fields(self, msg: Message, closing: str | None) -> None:
        while True:
            tok = self.peek()
            if closing is None and tok.kind == "eof":
                return
            if tok.kind == "eof":
                raise PrototxtError(self.where(tok), f"missing '{closing}' to close the message "
                                    f"opened at {msg.where}")
            if closing is not None and tok.text == closing and tok.kind == "punct":
                self.take()
                return
            if tok.kind != "ident" or tok.text.startswith("-"):
                expected = "a field name" if closing is None else f"a field name or '{closing}'"
                raise self.error(tok, f"expected {expected}")
            self.parse_field(msg)
            if self.peek().kind == "punct" and self.peek().text in ",;":
                self.take()

    def parse_field(self, msg: Message) -> None:
        name_tok = self.take()
        where = self.where(name_tok)
        has_colon = self.peek().kind == "punct" and self.peek().text == ":"
        if has_colon:
            self.take()
        tok = self.peek()
        if tok.kind == "punct" and tok.text in "{<":
            self.take()
            sub = Message(where=where)
            self.parse_body(sub, "}" if tok.text == "{" else ">")
            msg.fields.append(Field(name_tok.text, sub, where))
            return
        if not has_colon:
            raise self.error(tok, f"expected ':' or '{{' after field name '{name_tok.text}'")
        if tok.kind == "punct" and tok.text == "[":
            self.take()
            self.parse_list(msg, name_tok.text)
            return
        value_where = self.where(tok)
        msg.fields.append(Field(name_tok.text, self.parse_scalar(), value_where))

    def parse_list(self, msg: Message, name: str) -> None:
        if self.peek().kind == "punct" and self.peek().text == "]":
            self.take()
            return
        while True:
            tok = self.peek()
            if tok.kind == "punct" and tok.text in "{<":
                self.take()
                sub = Message(where=self.where(tok))
                self.parse_body(sub, "}" if tok.text == "{" else ">")
                msg.fields.append(Field(name, sub, self.where(tok)))
            else:
                msg.fields.append(Field(name, self.parse_scalar(), self.where(tok)))
            sep = self.take()
            if sep.kind == "punct" and sep.text == "]":
                return
            if not (sep.kind == "punct" and sep.text == ","):
                raise self.error(sep, "expected ',' or ']' in list")

    def parse_scalar(self) -> str | int | float | Ident:
        tok = self.take()
        if tok.kind == "string":
            parts = [_unquote(tok, self.source)]
            while self.peek().kind == "string":  # adjacent strings concatenate
                parts.append(_unquote(self.take(), self.source))
            return "".join(parts)
        if tok.kind == "number":
            return _number(tok.text)
        if tok.kind == "ident":
            return Ident(tok.text)
        raise self.error(tok, "expected a value")


def parse_text(text: str, source: str = "<text>") -> Message:
    """Parse protobuf text format into a :class:`Message` tree.

    Args:
        text: the file contents.
        source: the name used in error locations (usually the file path).

    Returns:
        The top-level message.

    Raises:
        PrototxtError: the text is malformed; the message starts with ``source:line:column``.

    Example:
        >>> msg = parse_text('name: "LeNet" layer { name: "ip" num: 3 }')
        >>> msg.get_str("name"), msg.messages("layer")[0].get_int("num")
        ('LeNet', 3)
    """
    parser = _Parser(text, source)
    root = Message(where=f"{source}:1:1")
    parser.parse_body(root, None)
    return root


def parse_file(path: str | Path, what: str = "prototxt file") -> Message:
    """Read and parse a prototxt file.

    Args:
        path: the file to read.
        what: how to name the file in the error when it is missing.

    Returns:
        The top-level message.

    Raises:
        FormatError: the file does not exist or is not UTF-8 text.
        PrototxtError: the text is malformed.

    Example:
        >>> parse_file("lenet_solver.prototxt").get_float("base_lr")  # doctest: +SKIP
        0.01
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"{what} not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{p}: not a text file ({exc.reason} at byte {exc.start})") from exc
    return parse_text(text, str(p))
