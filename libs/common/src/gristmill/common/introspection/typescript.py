"""Read a TypeScript script's ``main`` signature into a JSON Schema, without running it.

For Bun, Deno and ``nativets`` scripts: the script exports ``main``, whose parameters
are its inputs::

    type Postgresql = { host: string; port: number };

    /** Copy a table. @param limit rows at most */
    export async function main(db: Postgresql, table: string, mode: "append" | "replace",
                               limit = 100, options = { dryRun: false }) { ... }

A small hand-written lexer and parser, not a compiler: it reads the top-level ``type``,
``interface`` and ``enum`` declarations and ``main``'s parameter list, and nothing of
the code is evaluated. It takes well under a millisecond for a short script and about
30 ms for 1,200 lines, where only starting Deno or Bun costs 7 to 25 ms (measured
here), before loading a TypeScript parser into it.

How types map (``order`` keeps the parameters' order):

* ``string``, ``number``, ``boolean`` → that type; ``Date`` → a ``date-time`` string
  (the job receives a ``Date``); ``any``/``unknown`` → any value;
* ``T[]``, ``Array<T>``, tuples → ``array`` (with ``items`` when known);
* ``object``, ``Record<K, V>``, ``{ a: T; b?: U }`` (nested properties), interfaces →
  ``object``; string literal unions ``"a" | "b"`` and string ``enum`` s → ``enum``;
* a union with ``null`` is ``nullable``; ``x?: T``, ``T | undefined``, a default or
  ``nullable`` make an input optional;
* a type name that is neither built in nor declared in the script (``c: Postgresql``),
  ``Resource<"postgresql">``, and a declared type whose name is a resource type
  (``type Postgresql = {...}``: a known one, a lowercase one, or a custom ``C...`` one)
  → ``{"type": "object", "format": "resource-<snake_case name>"}``; other declared
  types are expanded;
* a literal default (string, number, boolean, ``null``, arrays and objects of them)
  is shown and, without annotation, gives the type; another default only makes the
  input optional. The summary and descriptions come from the JSDoc comment above
  ``main`` (``@param name text``) and comments before parameters and members.

Raises ``InvalidRequest`` for what would stop the script from loading: unterminated
strings, comments or templates, unbalanced brackets, a malformed parameter list (all
with ``location`` ``"line L, column C"``), or no exported ``main``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from gristmill.common.errors import InvalidRequest
from gristmill.common.introspection._annotations import KNOWN_RESOURCE_TYPES, snake_case
from gristmill.common.introspection.signature import ScriptSignature, object_schema

__all__ = ["parse_typescript"]

Schema = dict[str, Any]

# -- lexing ----------------------------------------------------------------------------

_NAME: Final = "name"
_STRING: Final = "string"
_NUMBER: Final = "number"
_TEMPLATE: Final = "template"  # a template literal without substitutions; value: its text
_TEMPLATE_START: Final = "template_start"  # `...${ : substitutions follow, then the end
_TEMPLATE_END: Final = "template_end"
_PUNCT: Final = "punct"
_REGEX: Final = "regex"
_END: Final = "end"

_NUMBER_PATTERN: Final = r"""
    (?: 0[xX][0-9a-fA-F_]+ | 0[oO][0-7_]+ | 0[bB][01_]+
      | (?: \d[\d_]* (?:\.[\d_]*)? | \.\d[\d_]* ) (?:[eE][+-]?\d[\d_]*)? )
    n?
"""
#: One token (or a run of space, or a comment) per match; what needs context (template
#: literals, ``/`` as division or regular expression, unterminated things) is ``punct``
#: and handled by ``_tokenize``.
_TOKEN: Final = re.compile(
    rf"""
      (?P<space>[\s\ufeff]+)
    | (?P<line_comment>//[^\n\r\u2028\u2029]*)
    | (?P<block_comment>/\*.*?\*/)
    | (?P<name>\#?(?:[^\W\d]|\$)(?:\w|\$|\u200c|\u200d)*)
    | (?P<number>{_NUMBER_PATTERN})
    | (?P<string>"(?:[^"\\\n\r]|\\(?:\r\n|[\s\S]))*"|'(?:[^'\\\n\r]|\\(?:\r\n|[\s\S]))*')
    | (?P<punct>\.\.\.|=>|\?\.(?!\d)|[\s\S])
    """,
    re.VERBOSE | re.DOTALL,
)
_TEMPLATE_CHUNK: Final = re.compile(r"(?:[^`\\$]|\\[\s\S]|\$(?!\{))*")
_REGEX_BODY: Final = re.compile(
    r"/(?![*/])(?:[^/\\\[\n\r]|\\.|\[(?:[^\]\\\n\r]|\\.)*\])+/[a-zA-Z]*"
)
_LINE_BREAK: Final = re.compile(r"[\n\r\u2028\u2029]")
#: After these keywords a ``/`` starts a regular expression, not a division.
_REGEX_AFTER_KEYWORDS: Final = frozenset(
    {
        "return", "typeof", "instanceof", "in", "of", "new", "delete", "void", "throw",
        "case", "do", "else", "yield", "await",
    }
)  # fmt: skip
_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}
_CLOSERS: Final = {")": "(", "]": "[", "}": "{"}
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class _Token(NamedTuple):
    kind: str
    text: str
    offset: int
    #: The decoded value of strings, templates and numbers.
    value: Any = None
    #: The comments right before this token (their text without the markers), if any ...
    comment: str | None = None
    #: ... and the last of them if it is a ``/** JSDoc */`` comment.
    jsdoc: str | None = None
    #: A line break separates this token from the previous one.
    newline_before: bool = False


class _Source:
    def __init__(self, code: str) -> None:
        self.code = code
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|[\n\r\u2028\u2029]", code)]

    def position(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def line(self, offset: int) -> int:
        return self.position(offset)[0]

    def error(self, message: str, offset: int) -> InvalidRequest:
        line, column = self.position(offset)
        return InvalidRequest(
            f"the script is not valid TypeScript: {message}",
            location=f"line {line}, column {column}",
        )


def _tokenize(source: _Source) -> list[_Token]:
    """The script's tokens, ending with an ``end`` token.

    Raises ``InvalidRequest`` for unterminated strings, comments and templates and for
    unbalanced brackets.
    """
    code = source.code
    match_token = _TOKEN.match
    tokens: list[_Token] = []
    append = tokens.append
    brackets: list[tuple[str, int]] = []  # open bracket, offset
    templates: list[tuple[int, int]] = []  # bracket depth and offset at each open ``${``
    comment: str | None = None
    jsdoc: str | None = None
    newline = False
    pos = 0
    size = len(code)
    while pos < size:
        match = match_token(code, pos)
        assert match is not None  # the last alternative matches any character
        kind: str = match.lastgroup or _PUNCT
        text = match.group()
        start, pos = pos, match.end()
        value: Any = None
        if kind == "space":
            newline = newline or _LINE_BREAK.search(text) is not None
            continue
        if kind == "line_comment":
            body = text[2:].strip()
            comment = f"{comment}\n{body}" if comment is not None and jsdoc is None else body
            jsdoc = None
            continue
        if kind == "block_comment":
            comment = _comment_text(text[2:-2])
            jsdoc = comment if text.startswith("/**") and len(text) > 4 else None
            newline = newline or _LINE_BREAK.search(text) is not None
            continue
        if kind == _STRING:
            value = text[1:-1] if "\\" not in text else _unescape(text[1:-1])
        elif kind == _NUMBER:
            value = _number_value(text)
        elif kind == _PUNCT:
            if text == "`" or (text == "}" and templates and templates[-1][0] == len(brackets)):
                if text == "}":
                    templates.pop()
                value, pos, open_substitution = _template_part(source, start)
                text = code[start:pos]
                if open_substitution:
                    templates.append((len(brackets), pos - 2))
                    if text[0] == "}":  # between two substitutions: nothing to record
                        comment, jsdoc, newline = None, None, False
                        continue
                    kind = _TEMPLATE_START
                else:
                    kind = _TEMPLATE if text[0] == "`" else _TEMPLATE_END
            elif text in "\"'":
                raise source.error("unterminated string", start)
            elif text == "/":
                if code.startswith("/*", start):
                    raise source.error("unterminated comment", start)
                regex = _REGEX_BODY.match(code, start) if _regex_allowed(tokens) else None
                if regex is not None:
                    kind, pos = _REGEX, regex.end()
                    text = regex.group()
            elif text in _OPENERS:
                brackets.append((text, start))
            elif text in _CLOSERS:
                if not brackets or brackets[-1][0] != _CLOSERS[text]:
                    raise source.error(f"unexpected `{text}`", start)
                brackets.pop()
        append(_Token(kind, text, start, value, comment, jsdoc, newline))
        comment, jsdoc, newline = None, None, False
    if templates:
        raise source.error("`${` is never closed", templates[-1][1])
    if brackets:
        opener, offset = brackets[-1]
        raise source.error(f"`{opener}` is never closed", offset)
    append(_Token(_END, "", size))
    return tokens


def _comment_text(body: str) -> str:
    lines = [line.strip().removeprefix("*").strip() for line in body.strip("*").splitlines()]
    return "\n".join(lines).strip()


def _regex_allowed(tokens: list[_Token]) -> bool:
    if not tokens:
        return True
    last = tokens[-1]
    if last.kind == _NAME:
        return last.text in _REGEX_AFTER_KEYWORDS
    if last.kind in (_NUMBER, _STRING, _TEMPLATE, _TEMPLATE_END, _REGEX):
        return False
    return last.text not in (")", "]", "}")


def _unescape(body: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            decoded, index = _escape(body, index)
            out.append(decoded)
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _template_part(source: _Source, pos: int) -> tuple[str, int, bool]:
    """From a backtick or the ``}`` closing a substitution to the next ``${`` or backtick:
    ``(decoded text, end offset, whether a substitution opens)``."""
    code = source.code
    chunk = _TEMPLATE_CHUNK.match(code, pos + 1)
    assert chunk is not None  # the pattern matches the empty string
    end = chunk.end()
    body = chunk.group()
    value = body if "\\" not in body else _unescape(body)
    if code.startswith("`", end):
        return value, end + 1, False
    if code.startswith("${", end):
        return value, end + 2, True
    raise source.error("unterminated template literal", pos)


def _escape(code: str, index: int) -> tuple[str, int]:
    """The character an escape sequence at ``code[index]`` (a backslash) stands for."""
    following = code[index + 1 : index + 2]
    if following in _ESCAPES:
        return _ESCAPES[following], index + 2
    if following == "x":
        digits = code[index + 2 : index + 4]
        if re.fullmatch(r"[0-9a-fA-F]{2}", digits):
            return chr(int(digits, 16)), index + 4
    if following == "u":
        braced = re.match(r"\{([0-9a-fA-F]{1,6})\}", code[index + 2 : index + 10])
        if braced and int(braced.group(1), 16) <= 0x10FFFF:
            return chr(int(braced.group(1), 16)), index + 2 + braced.end()
        digits = code[index + 2 : index + 6]
        if re.fullmatch(r"[0-9a-fA-F]{4}", digits):
            return chr(int(digits, 16)), index + 6
    if following == "\r" and code[index + 2 : index + 3] == "\n":
        return "", index + 3  # a line continuation
    if following in "\n\r\u2028\u2029":
        return "", index + 2
    return following, index + 2


def _number_value(text: str) -> int | float | None:
    """The value of a numeric literal; ``None`` for a BigInt (not a JSON number)."""
    if text.endswith("n"):
        return None
    clean = text.replace("_", "")
    if clean[:2].lower() in ("0x", "0o", "0b"):
        return int(clean, 0)
    if re.fullmatch(r"0\d+", clean):  # legacy octal
        return int(clean, 8) if all(c in "01234567" for c in clean) else int(clean)
    if any(c in clean for c in ".eE"):
        return float(clean)
    return int(clean)


# -- the syntax of types ----------------------------------------------------------------


@dataclass(frozen=True)
class _Named:
    name: str  # dotted: ``wmill.Resource``
    args: tuple[_Type, ...]


@dataclass(frozen=True)
class _Literal:
    value: str | int | float | bool | None  # ``None`` is ``null``


@dataclass(frozen=True)
class _Undefined:
    pass


@dataclass(frozen=True)
class _Member:
    name: str
    optional: bool
    type: _Type | None
    line: int
    description: str | None


@dataclass(frozen=True)
class _ObjectType:
    members: tuple[_Member, ...]


@dataclass(frozen=True)
class _Array:
    item: _Type


@dataclass(frozen=True)
class _Tuple:
    items: tuple[_Type, ...]


@dataclass(frozen=True)
class _Union:
    members: tuple[_Type, ...]


@dataclass(frozen=True)
class _Intersection:
    members: tuple[_Type, ...]


@dataclass(frozen=True)
class _TemplateType:
    pass


@dataclass(frozen=True)
class _Unsupported:
    text: str


_Type = (
    _Named
    | _Literal
    | _Undefined
    | _ObjectType
    | _Array
    | _Tuple
    | _Union
    | _Intersection
    | _TemplateType
    | _Unsupported
)


class _NotAType(Exception):
    """The tokens at hand do not form a type (the parser backs off)."""


class _Parser:
    """A cursor over the tokens, with the type and literal grammars."""

    def __init__(self, source: _Source, tokens: list[_Token]) -> None:
        self.source = source
        self.tokens = tokens
        self.pos = 0

    # -- cursor

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def peek(self, ahead: int = 1) -> _Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def at(self, *texts: str) -> bool:
        token = self.token
        return token.kind in (_PUNCT, _NAME) and token.text in texts

    def advance(self) -> _Token:
        token = self.token
        if token.kind != _END:
            self.pos += 1
        return token

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.advance()
            return True
        return False

    def expect(self, text: str, what: str) -> _Token:
        if not self.at(text):
            raise self.error(f"expected `{text}` {what}")
        return self.advance()

    def error(self, message: str) -> InvalidRequest:
        token = self.token
        found = "the end of the script" if token.kind == _END else f"`{token.text}`"
        return self.source.error(f"{message}, found {found}", token.offset)

    def skip_balanced(self) -> None:
        """Past one token, or past a whole bracketed group if it opens one."""
        token = self.advance()
        if token.kind == _PUNCT and token.text in _OPENERS:
            depth = 1
            while depth and self.token.kind != _END:
                text = self.advance().text
                if text in _OPENERS:
                    depth += 1
                elif text in _CLOSERS:
                    depth -= 1
        elif token.kind == _TEMPLATE_START:
            self.skip_template()

    def skip_template(self) -> None:
        depth = 1
        while depth and self.token.kind != _END:
            kind = self.advance().kind
            if kind == _TEMPLATE_START:
                depth += 1
            elif kind == _TEMPLATE_END:
                depth -= 1

    def skip_angles(self) -> None:
        """Past ``<...>`` (type parameters or arguments) starting at the current ``<``."""
        depth = 0
        while self.token.kind != _END:
            if self.at("<"):
                depth += 1
            elif self.at(">"):
                depth -= 1
                if depth == 0:
                    self.advance()
                    return
            self.skip_balanced()

    # -- types

    def type(self) -> _Type:
        """A type; raises ``_NotAType`` when the tokens are not one."""
        start = self.pos
        result = self._union()
        if self.at("extends") and not self.token.newline_before:  # a conditional type
            self.advance()
            self._union()
            self.expect("?", "in a conditional type")
            self.type()
            self.expect(":", "in a conditional type")
            self.type()
            return _Unsupported(self._text(start))
        return result

    def _text(self, start: int) -> str:
        first, last = self.tokens[start], self.tokens[max(start, self.pos - 1)]
        return self.source.code[first.offset : last.offset + len(last.text)]

    def _union(self) -> _Type:
        self.accept("|")
        members = [self._intersection()]
        while self.accept("|"):
            members.append(self._intersection())
        return members[0] if len(members) == 1 else _Union(tuple(members))

    def _intersection(self) -> _Type:
        self.accept("&")
        members = [self._postfix()]
        while self.accept("&"):
            members.append(self._postfix())
        return members[0] if len(members) == 1 else _Intersection(tuple(members))

    def _postfix(self) -> _Type:
        start = self.pos
        result = self._primary()
        while self.at("[") and not self.token.newline_before:
            self.advance()
            if self.accept("]"):
                result = _Array(result)
            else:
                self.type()
                self.expect("]", "after an indexed access type")
                result = _Unsupported(self._text(start))
        return result

    def _primary(self) -> _Type:
        start = self.pos
        token = self.token
        if token.kind == _STRING:
            self.advance()
            return _Literal(token.value)
        if token.kind == _TEMPLATE:
            self.advance()
            return _Literal(token.value)
        if token.kind == _TEMPLATE_START:
            self.advance()
            self.skip_template()
            return _TemplateType()
        if token.kind == _NUMBER:
            self.advance()
            return _Literal(token.value) if token.value is not None else _Unsupported(token.text)
        if self.at("-") and self.peek().kind == _NUMBER:
            self.advance()
            number = self.advance().value
            return _Literal(-number) if number is not None else _Unsupported(self._text(start))
        if self.at("("):
            if self._looks_like_function_type():
                return self._function_type(start)
            self.advance()
            inner = self.type()
            self.expect(")", "to close a parenthesized type")
            return inner
        if self.at("{"):
            return self._object_type()
        if self.at("["):
            return self._tuple()
        if self.at("<") or self.at("new") or self.at("abstract"):
            return self._function_type(start)
        if token.kind != _NAME:
            raise _NotAType
        if token.text in ("keyof", "typeof", "unique", "infer", "asserts"):
            self.advance()
            if token.text == "typeof":
                self._dotted_name()
            else:
                self._postfix()
            return _Unsupported(self._text(start))
        if token.text == "readonly":
            self.advance()
            return self._postfix()
        if token.text in ("true", "false"):
            self.advance()
            return _Literal(token.text == "true")
        if token.text == "null":
            self.advance()
            return _Literal(None)
        if token.text in ("undefined", "void"):
            self.advance()
            return _Undefined()
        name = self._dotted_name()
        args: list[_Type] = []
        if self.at("<") and not self.token.newline_before:
            self.advance()
            if not self.at(">"):
                args.append(self.type())
                while self.accept(","):
                    args.append(self.type())
            self.expect(">", "to close type arguments")
        return _Named(name, tuple(args))

    def _dotted_name(self) -> str:
        if self.token.kind != _NAME:
            raise _NotAType
        parts = [self.advance().text]
        while self.at(".") and self.peek().kind == _NAME:
            self.advance()
            parts.append(self.advance().text)
        return ".".join(parts)

    def _looks_like_function_type(self) -> bool:
        """At ``(``: is this ``(params) => T`` rather than a parenthesized type?"""
        saved = self.pos
        try:
            self.skip_balanced()
            return self.at("=>")
        finally:
            self.pos = saved

    def _function_type(self, start: int) -> _Type:
        self.accept("abstract")
        self.accept("new")
        if self.at("<"):
            self.skip_angles()
        if not self.at("("):
            raise _NotAType
        self.skip_balanced()
        self.expect("=>", "in a function type")
        self.type()
        return _Unsupported(self._text(start))

    def _tuple(self) -> _Type:
        self.expect("[", "")
        items: list[_Type] = []
        while not self.at("]"):
            self.accept("...")
            if self.token.kind == _NAME and self.peek().text in (":", "?"):
                self.advance()  # a labelled element: ``[name: string]``
                self.accept("?")
                self.expect(":", "after a tuple label")
            items.append(self.type())
            self.accept("?")
            if not self.accept(","):
                break
        self.expect("]", "to close a tuple type")
        return _Tuple(tuple(items))

    def _object_type(self) -> _Type:
        self.expect("{", "")
        members: list[_Member] = []
        while not self.at("}") and self.token.kind != _END:
            member = self._member()
            if member is not None:
                members.append(member)
            separated = self.accept(";") or self.accept(",") or self.token.newline_before
            if not separated and not self.at("}"):
                raise self.error("expected `;` between members of an object type")
        self.expect("}", "to close an object type")
        return _ObjectType(tuple(members))

    def _member(self) -> _Member | None:
        """One member of an object type or interface; ``None`` for those left out
        (index signatures, methods, call signatures)."""
        token = self.token
        while self.at("readonly", "+", "-") and self.peek().text not in (":", "?", "(", ";"):
            self.advance()
        if self.at("["):  # an index signature or a mapped type
            self.skip_balanced()
            self.accept("?")
            if self.accept(":"):
                self.type()
            return None
        if self.at("(", "<"):  # a call signature
            if self.at("<"):
                self.skip_angles()
            self.skip_balanced()
            if self.accept(":"):
                self.type()
            return None
        if self.at("new") and self.peek().text in ("(", "<"):
            self.advance()
            if self.at("<"):
                self.skip_angles()
            self.skip_balanced()
            if self.accept(":"):
                self.type()
            return None
        name_token = self.advance()
        if name_token.kind in (_STRING, _NUMBER):
            name = str(name_token.value if name_token.kind == _STRING else name_token.text)
        elif name_token.kind == _NAME:
            name = name_token.text
        else:
            raise self.source.error(
                f"unexpected `{name_token.text}` in an object type", name_token.offset
            )
        if self.at("get", "set") and self.token.kind == _NAME and self.peek().text == "(":
            name = self.advance().text  # accessor: ``get x(): T``
        optional = self.accept("?")
        if self.at("(", "<"):  # a method
            if self.at("<"):
                self.skip_angles()
            self.skip_balanced()
            if self.accept(":"):
                self.type()
            return None
        member_type = self.type() if self.accept(":") else None
        return _Member(
            name=name,
            optional=optional,
            type=member_type,
            line=self.source.line(token.offset),
            description=token.comment,
        )

    # -- literal values

    def literal(self) -> tuple[bool, Any]:
        """A JSON literal expression: ``(True, value)``, or ``(False, None)`` with the
        cursor wherever reading stopped."""
        token = self.token
        if token.kind in (_STRING, _TEMPLATE):
            self.advance()
            return True, token.value
        if token.kind == _NUMBER:
            self.advance()
            return token.value is not None, token.value
        if self.at("-", "+") and self.peek().kind == _NUMBER:
            sign = -1 if self.advance().text == "-" else 1
            number = self.advance().value
            return (False, None) if number is None else (True, sign * number)
        if token.kind == _NAME and token.text in ("true", "false", "null"):
            self.advance()
            return True, {"true": True, "false": False, "null": None}[token.text]
        if self.at("["):
            return self._array_literal()
        if self.at("{"):
            return self._object_literal()
        return False, None

    def _array_literal(self) -> tuple[bool, Any]:
        self.advance()
        items: list[Any] = []
        while not self.at("]"):
            ok, value = self.literal()
            if not ok:
                return False, None
            items.append(value)
            self._skip_assertion()
            if not self.accept(","):
                break
        if not self.accept("]"):
            return False, None
        return True, items

    def _object_literal(self) -> tuple[bool, Any]:
        self.advance()
        result: dict[str, Any] = {}
        while not self.at("}"):
            key = self.token
            if key.kind not in (_NAME, _STRING, _NUMBER) or self.peek().text != ":":
                return False, None
            self.advance()
            self.advance()
            ok, value = self.literal()
            if not ok:
                return False, None
            self._skip_assertion()
            result[str(key.value) if key.kind == _STRING else _key_text(key)] = value
            if not self.accept(","):
                break
        if not self.accept("}"):
            return False, None
        return True, result

    def _skip_assertion(self) -> None:
        """Past ``as const`` / ``as T`` / ``satisfies T`` after a value."""
        while self.at("as", "satisfies") and self.token.kind == _NAME:
            self.advance()
            if not self.accept("const"):
                try:
                    self.type()
                except _NotAType:
                    return


def _key_text(token: _Token) -> str:
    if token.kind == _NUMBER and isinstance(token.value, int | float):
        value = token.value
        return str(int(value)) if float(value).is_integer() else repr(value)
    return token.text


# -- the script's declarations ------------------------------------------------------


@dataclass
class _Parameter:
    name: str | None  # ``None``: a destructuring pattern
    line: int
    column: int
    rest: bool = False
    optional: bool = False
    type: _Type | None = None
    has_default: bool = False
    default_ok: bool = False
    default: Any = None
    description: str | None = None


@dataclass
class _Main:
    exported: bool
    is_async: bool
    offset: int
    parameters: list[_Parameter]
    doc: str | None
    type_parameters: frozenset[str]


@dataclass
class _Declarations:
    aliases: dict[str, int] = field(default_factory=dict)  # name → token index of the type
    interfaces: dict[str, tuple[list[int], int]] = field(default_factory=dict)  # extends, body
    enums: dict[str, int] = field(default_factory=dict)  # name → token index of ``{``
    exported_names: set[str] = field(default_factory=set)
    main: _Main | None = None


#: Keywords that may precede a declaration.
_PREFIXES: Final = ("export", "declare", "default", "async")


def _declarations(parser: _Parser) -> _Declarations:
    """Scan the top level for type declarations, ``export { ... }`` lists and ``main``."""
    found = _Declarations()
    tokens = parser.tokens
    depth = 0
    index = 0
    while tokens[index].kind != _END:
        token = tokens[index]
        if token.kind == _PUNCT and token.text in _OPENERS:
            depth += 1
        elif token.kind == _PUNCT and token.text in _CLOSERS:
            depth -= 1
        elif depth == 0 and token.kind == _NAME and _statement_start(tokens, index):
            handled = _declaration(parser, index, found)
            if handled is not None:
                index = handled
                continue
        index += 1
    return found


def _statement_start(tokens: list[_Token], index: int) -> bool:
    if index == 0:
        return True
    previous = tokens[index - 1]
    if previous.kind == _PUNCT and previous.text in (";", "}", "{"):
        return True
    if previous.kind == _NAME and previous.text in (*_PREFIXES, "const"):
        return True
    return previous.kind != _PUNCT and tokens[index].newline_before


def _declaration(parser: _Parser, index: int, found: _Declarations) -> int | None:
    """Record the declaration starting at ``index``; the index to resume scanning at."""
    tokens = parser.tokens
    token = tokens[index]
    after = tokens[index + 1]
    text = token.text
    if text == "type" and after.kind == _NAME and tokens[index + 2].text in ("=", "<"):
        parser.pos = index + 2
        if parser.at("<"):
            parser.skip_angles()
        if parser.accept("="):
            found.aliases.setdefault(after.text, parser.pos)
        return parser.pos
    if text == "interface" and after.kind == _NAME:
        parser.pos = index + 2
        if parser.at("<"):
            parser.skip_angles()
        bases: list[int] = []
        if parser.accept("extends"):
            while parser.token.kind == _NAME:
                bases.append(parser.pos)
                parser._dotted_name()
                if parser.at("<"):
                    parser.skip_angles()
                if not parser.accept(","):
                    break
        if parser.at("{"):
            found.interfaces.setdefault(after.text, (bases, parser.pos))
        return None
    if text == "enum" and after.kind == _NAME and tokens[index + 2].text == "{":
        found.enums.setdefault(after.text, index + 2)
        return None
    if text == "export" and after.text == "{":
        parser.pos = index + 1
        parser.advance()
        while parser.token.kind == _NAME:
            local = parser.advance().text
            exported = parser.advance().text if parser.accept("as") else local
            if exported == "main":
                found.exported_names.add(local)
            if not parser.accept(","):
                break
        return None
    if found.main is None:
        main = _main_at(parser, index)
        if main is not None:
            found.main = main
            return parser.pos
    return None


def _main_at(parser: _Parser, index: int) -> _Main | None:
    """``main`` declared at ``index`` (``function main`` or ``const main = ...``)."""
    tokens = parser.tokens
    start = index
    exported = False
    default_export = False
    while tokens[start].text in ("export", "declare", "default"):
        exported = exported or tokens[start].text == "export"
        default_export = default_export or tokens[start].text == "default"
        start += 1
    if index > 0 and tokens[index - 1].kind == _NAME and tokens[index - 1].text in _PREFIXES:
        return None  # a declaration already read from its first keyword
    is_async = tokens[start].text == "async"
    position = start + 1 if is_async else start
    parser.pos = position
    if parser.at("function"):
        parser.advance()
        parser.accept("*")
        if not (parser.token.kind == _NAME and parser.token.text == "main"):
            return None
        parser.advance()
    elif parser.at("const", "let", "var") and not is_async:
        parser.advance()
        if not (parser.token.kind == _NAME and parser.token.text == "main"):
            return None
        parser.advance()
        if parser.accept(":"):
            try:
                parser.type()
            except _NotAType:
                return None
        if not parser.accept("="):
            return None
        is_async = parser.accept("async")
        if parser.accept("function"):
            parser.accept("*")
            if parser.token.kind == _NAME and not parser.at("("):
                parser.advance()
    else:
        return None
    type_parameters = _type_parameters(parser)
    doc = tokens[index].jsdoc
    main_offset = tokens[index].offset
    if parser.token.kind == _NAME and parser.peek().text == "=>":  # ``async x => ...``
        name = parser.advance()
        line, column = parser.source.position(name.offset)
        parameters = [_Parameter(name=name.text, line=line, column=column)]
    else:
        parameters = _parameters(parser)
    return _Main(
        exported=exported and not default_export,
        is_async=is_async,
        offset=main_offset,
        parameters=parameters,
        doc=doc,
        type_parameters=type_parameters,
    )


def _type_parameters(parser: _Parser) -> frozenset[str]:
    names: set[str] = set()
    if not parser.at("<"):
        return frozenset()
    parser.advance()
    while parser.token.kind == _NAME:
        parser.accept("const")
        names.add(parser.advance().text)
        depth = 0
        while parser.token.kind != _END and not (depth == 0 and parser.at(",", ">")):
            if parser.at("<"):
                depth += 1
            elif parser.at(">"):
                depth -= 1
            parser.skip_balanced()
        if not parser.accept(","):
            break
    parser.expect(">", "to close main's type parameters")
    return frozenset(names)


def _parameters(parser: _Parser) -> list[_Parameter]:
    parser.expect("(", "after `main`")
    parameters: list[_Parameter] = []
    while not parser.at(")"):
        parameter = _parameter(parser)
        if parameter is not None:
            parameters.append(parameter)
        if not parser.accept(","):
            break
    parser.expect(")", "to close main's parameters")
    return parameters


def _parameter(parser: _Parser) -> _Parameter | None:
    token = parser.token
    description = token.comment
    while parser.at("@"):  # decorators
        parser.advance()
        parser._dotted_name()
        if parser.at("("):
            parser.skip_balanced()
    rest = parser.accept("...")
    name_token = parser.token
    line, column = parser.source.position(name_token.offset)
    name: str | None
    if parser.at("{", "["):
        parser.skip_balanced()
        name = None
    elif name_token.kind == _NAME:
        parser.advance()
        name = name_token.text
    else:
        raise parser.error("expected a parameter name")
    parameter = _Parameter(name=name, line=line, column=column, rest=rest, description=description)
    parameter.optional = parser.accept("?")
    if parser.accept(":"):
        parameter.type = _parameter_type(parser, name)
    if parser.accept("="):
        parameter.has_default = True
        _default(parser, parameter)
    if not parser.at(",", ")"):
        raise parser.error("expected `,` or `)` after a parameter")
    if name == "this":
        return None  # TypeScript's ``this`` parameter is erased
    return parameter


def _parameter_type(parser: _Parser, name: str | None) -> _Type:
    """A parameter's type; one this parser cannot read becomes ``_Unsupported`` (the
    runtime is the judge of types), but a missing type is an error."""
    start = parser.pos
    try:
        parsed = parser.type()
        if parser.at(",", ")", "="):
            return parsed
    except (_NotAType, InvalidRequest):
        pass
    parser.pos = start
    if parser.at(",", ")", "=") or parser.token.kind == _END:
        raise parser.error(f"expected the type of `{name or 'the parameter'}`")
    depth = 0
    while parser.token.kind != _END and not (depth == 0 and parser.at(",", ")", "=")):
        if parser.at("<"):
            depth += 1
        elif parser.at(">"):
            depth -= 1
        parser.skip_balanced()
    return _Unsupported(parser._text(start))


def _default(parser: _Parser, parameter: _Parameter) -> None:
    """Read a default value: a JSON literal, or anything else up to the parameter's end."""
    start = parser.pos
    ok, value = parser.literal()
    if ok:
        parser._skip_assertion()
        if parser.at(",", ")"):
            parameter.default_ok, parameter.default = True, value
            return
    if parser.at("undefined") and parser.peek().text in (",", ")"):
        parser.advance()
        parameter.has_default, parameter.optional = False, True
        return
    parser.pos = start
    # Any expression: up to a `,` or `)` outside brackets, unless what follows that comma
    # is not a parameter (``new Map<string, number>()`` holds a comma of its own).
    while parser.token.kind != _END:
        if parser.at(")"):
            return
        if parser.at(","):
            following = parser.peek()
            after = parser.peek(2)
            looks_like_parameter = following.text in ("{", "[", "...", ")", "@") or (
                following.kind == _NAME and after.text in (":", "?", "=", ",", ")")
            )
            if looks_like_parameter:
                return
        parser.skip_balanced()


# -- types to schemas ---------------------------------------------------------------

_PRIMITIVES: Final[dict[str, Schema]] = {
    "string": {"type": "string"},
    "String": {"type": "string"},
    "number": {"type": "number"},
    "Number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "Boolean": {"type": "boolean"},
    "Date": {"type": "string", "format": "date-time"},
    "object": {"type": "object"},
    "Object": {"type": "object"},
}
_ANY: Final = frozenset({"any", "unknown", "never"})
_ARRAYS: Final = frozenset({"Array", "ReadonlyArray"})
_OBJECTS: Final = frozenset({"Record", "Partial", "Required", "Readonly", "Pick", "Omit"})
#: Wrappers whose schema is their argument's.
_TRANSPARENT: Final = frozenset({"Promise", "Awaited", "NonNullable"})
#: Global types that are not JSON values, hence not resource types either.
_NOT_JSON: Final = frozenset(
    {
        "bigint", "symbol", "Function", "RegExp", "Error", "Map", "Set", "WeakMap", "WeakSet",
        "Uint8Array", "ArrayBuffer", "Buffer", "Blob", "File", "URL", "Headers", "Request",
        "Response", "ReadableStream", "Symbol", "BigInt",
    }
)  # fmt: skip


def _resource(name: str) -> Schema:
    return {"type": "object", "format": f"resource-{name}"}


class _SchemaBuilder:
    """Turns parsed types into schemas against the script's declarations; ``notes``
    collects what could not be expressed, each prefixed with its line."""

    def __init__(
        self, parser: _Parser, declarations: _Declarations, generics: frozenset[str]
    ) -> None:
        self.parser = parser
        self.declarations = declarations
        self.generics = generics
        self.notes: list[str] = []
        self._active: list[str] = []

    def note(self, line: int, message: str) -> None:
        text = f"line {line}: {message}"
        if text not in self.notes:
            self.notes.append(text)

    def field(
        self,
        name: str,
        type_: _Type | None,
        line: int,
        *,
        optional: bool = False,
        has_default: bool = False,
        default_ok: bool = False,
        default: Any = None,
    ) -> tuple[Schema, bool]:
        """The schema of one input and whether it is required."""
        if type_ is not None:
            type_, admits_undefined = _strip_undefined(type_)
            optional = optional or admits_undefined
        schema: Schema = {} if type_ is None else self.schema(type_, line)
        if has_default and default_ok:
            if type_ is None:
                schema = _schema_of_value(default)
            if default is None:
                schema["nullable"] = True
            else:
                schema["default"] = default
        elif has_default:
            self.note(
                line,
                f"the default of `{name}` is not a JSON literal; "
                "it is left to the script and not shown in the form",
            )
        required = not (optional or has_default or schema.get("nullable", False))
        return schema, required

    def schema(self, node: _Type, line: int) -> Schema:
        if isinstance(node, _Named):
            return self._named(node, line)
        if isinstance(node, _Literal):
            if node.value is None:
                return {"nullable": True}
            return _enum([node.value])
        if isinstance(node, _Undefined):
            return {}
        if isinstance(node, _ObjectType):
            return self._object(node.members)
        if isinstance(node, _Array):
            return _array(self.schema(node.item, line))
        if isinstance(node, _Tuple):
            items = [self.schema(item, line) for item in node.items]
            same = bool(items) and all(item == items[0] for item in items)
            return _array(items[0] if same else {})
        if isinstance(node, _Union):
            return self._union(node, line)
        if isinstance(node, _Intersection):
            return self._intersection(node, line)
        if isinstance(node, _TemplateType):
            return {"type": "string"}
        self.note(line, f"unsupported type `{node.text}`; any value is accepted")
        return {}

    def _union(self, node: _Union, line: int) -> Schema:
        members = [m for m in node.members if not isinstance(m, _Undefined)]
        nullable = any(isinstance(m, _Literal) and m.value is None for m in members)
        members = [m for m in members if not (isinstance(m, _Literal) and m.value is None)]
        schema: Schema
        if members and all(isinstance(m, _Literal) for m in members):
            values: list[Any] = []
            for member in members:
                assert isinstance(member, _Literal)
                if member.value not in values:
                    values.append(member.value)
            both = len(values) == 2 and all(isinstance(value, bool) for value in values)
            schema = {"type": "boolean"} if both else _enum(values)
        else:
            options = [self.schema(m, line) for m in members]
            if len(options) == 1:
                schema = options[0]
            elif not options or any(option == {} for option in options):
                schema = {}
            else:
                schema = {"anyOf": options}
        if nullable:
            schema["nullable"] = True
        return schema

    def _intersection(self, node: _Intersection, line: int) -> Schema:
        parts = [self.schema(member, line) for member in node.members]
        if all(part.get("type") == "object" for part in parts):
            properties: dict[str, Schema] = {}
            required: list[str] = []
            for part in parts:
                properties.update(part.get("properties", {}))
                required.extend(r for r in part.get("required", []) if r not in required)
            if not properties:
                return {"type": "object"}
            return object_schema(properties, required)
        if any(part.get("type") == "object" for part in parts):
            return {"type": "object"}
        return {}

    def _object(self, members: tuple[_Member, ...]) -> Schema:
        if not members:
            return {"type": "object"}
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for member in members:
            schema, is_required = self.field(
                member.name, member.type, member.line, optional=member.optional
            )
            if member.description:
                schema["description"] = member.description
            properties[member.name] = schema
            if is_required:
                required.append(member.name)
        return object_schema(properties, required)

    def _named(self, node: _Named, line: int) -> Schema:
        name = node.name
        last = name.rpartition(".")[2]
        if name in _PRIMITIVES:
            return dict(_PRIMITIVES[name])
        if name in _ANY or name in self.generics:
            return {}
        if name in _ARRAYS:
            return _array(self.schema(node.args[0], line) if node.args else {})
        if name in _OBJECTS:
            return {"type": "object"}
        if name in _TRANSPARENT:
            return self.schema(node.args[0], line) if node.args else {}
        if last == "Resource" and node.args:
            argument = node.args[0]
            if isinstance(argument, _Literal) and isinstance(argument.value, str):
                return _resource(argument.value)
        if name in self.declarations.aliases or name in self.declarations.interfaces:
            return self._declared(name, line)
        if name in self.declarations.enums:
            return self._enum_declaration(name, line)
        if name in _NOT_JSON:
            self.note(line, f"`{name}` is not a JSON value; any value is accepted")
            return {}
        return _resource(snake_case(last))

    def _declared(self, name: str, line: int) -> Schema:
        if name in self._active:
            self.note(line, f"`{name}` refers to itself; its inner level is a plain object")
            return {"type": "object"}
        resource = _resource_name(name)
        self._active.append(name)
        try:
            if name in self.declarations.aliases:
                schema = self._alias(name, line)
            else:
                schema = self._interface(name, line)
        finally:
            self._active.pop()
        if resource is not None and schema.get("type") in ("object", None):
            return _resource(resource)
        return schema

    def _alias(self, name: str, line: int) -> Schema:
        self.parser.pos = self.declarations.aliases[name]
        try:
            node = self.parser.type()
        except (_NotAType, InvalidRequest):
            self.note(line, f"the type `{name}` could not be read; any value is accepted")
            return {}
        return self.schema(node, line)

    def _interface(self, name: str, line: int) -> Schema:
        bases, body = self.declarations.interfaces[name]
        properties: dict[str, Schema] = {}
        required: list[str] = []
        for base in bases:
            self.parser.pos = base
            try:
                base_type = self.parser.type()
            except (_NotAType, InvalidRequest):
                continue
            inherited = self.schema(base_type, line)
            properties.update(inherited.get("properties", {}))
            required.extend(r for r in inherited.get("required", []) if r not in required)
        self.parser.pos = body
        try:
            own = self.schema(self.parser._object_type(), line)
        except InvalidRequest:
            self.note(line, f"the type `{name}` could not be read; any value is accepted")
            return {}
        properties.update(own.get("properties", {}))
        required.extend(r for r in own.get("required", []) if r not in required)
        if not properties:
            return {"type": "object"}
        return object_schema(properties, required)

    def _enum_declaration(self, name: str, line: int) -> Schema:
        parser = self.parser
        parser.pos = self.declarations.enums[name] + 1
        values: list[Any] = []
        counter: int | float | None = 0
        while parser.token.kind in (_NAME, _STRING):
            parser.advance()
            if parser.accept("="):
                ok, value = parser.literal()
                if not ok or not isinstance(value, str | int | float):
                    self.note(line, f"enum `{name}` has a computed member; any value is accepted")
                    return {}
                values.append(value)
                counter = value + 1 if isinstance(value, int | float) else None
            elif counter is None:
                return {}
            else:
                values.append(counter)
                counter += 1
            if not parser.accept(","):
                break
        return _enum(values) if values else {}


def _strip_undefined(node: _Type) -> tuple[_Type | None, bool]:
    if isinstance(node, _Undefined):
        return None, True
    if isinstance(node, _Union) and any(isinstance(m, _Undefined) for m in node.members):
        rest = tuple(m for m in node.members if not isinstance(m, _Undefined))
        if not rest:
            return None, True
        return (rest[0] if len(rest) == 1 else _Union(rest)), True
    return node, False


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _enum(values: list[Any]) -> Schema:
    schema: Schema = {}
    kinds = {_json_type(value) for value in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    schema["enum"] = values
    return schema


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items} if items else {"type": "array"}


def _schema_of_value(value: Any) -> Schema:
    """The type a literal default implies, for a parameter without annotation."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int | float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, dict):
        return {"type": "object"}
    if isinstance(value, list):
        kinds = [_schema_of_value(item) for item in value]
        same = bool(kinds) and all(kind == kinds[0] for kind in kinds)
        if same and kinds[0].get("type") not in (None, "array", "object"):
            return {"type": "array", "items": kinds[0]}
        return {"type": "array"}
    return {}


def _resource_name(name: str) -> str | None:
    """The resource type a declared type's name stands for, if it stands for one."""
    snake = snake_case(name)
    if name.islower() or snake in KNOWN_RESOURCE_TYPES or snake.startswith("c_"):
        return snake
    return None


# -- JSDoc ----------------------------------------------------------------------------

_JSDOC_PARAM: Final = re.compile(
    r"^@(?:param|arg|argument)\s+(?:\{[^}]*\}\s*)?\[?([\w$.]+)[^\s\]]*\]?\s*(?:-\s*)?(.*)$"
)


def _jsdoc(text: str | None) -> tuple[str | None, dict[str, str]]:
    """The first paragraph of a JSDoc comment and its ``@param`` descriptions."""
    if not text:
        return None, {}
    summary: list[str] = []
    params: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_summary = True
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("@"):
            in_summary = False
            match = _JSDOC_PARAM.match(line)
            current = None
            if match:
                current = params.setdefault(match.group(1), [])
                if match.group(2):
                    current.append(match.group(2))
            continue
        if current is not None:
            if line:
                current.append(line)
            continue
        if in_summary:
            if not line:
                in_summary = not summary
                continue
            summary.append(line)
    return " ".join(summary) or None, {k: " ".join(v) for k, v in params.items() if v}


# -- the entry point ----------------------------------------------------------------


def parse_typescript(code: str, *, language: str = "bun") -> ScriptSignature:
    """The input schema of the exported ``main`` in a TypeScript script.

    ``language`` is the label the signature carries (``bun``, ``deno``, ``nativets``).

    Raises:
        InvalidRequest: the code does not lex or ``main``'s parameters do not parse
            (``location`` is ``"line L, column C"``), or no ``main`` is exported.
    """
    source = _Source(code)
    try:
        tokens = _tokenize(source)
        parser = _Parser(source, tokens)
        declarations = _declarations(parser)
    except RecursionError:
        raise InvalidRequest("the script is nested too deeply to be read") from None
    main = declarations.main
    if main is None:
        raise InvalidRequest(
            "the script defines no `main` function; add `export async function main(...)` "
            "whose parameters are the script's inputs"
        )
    if not main.exported and "main" not in declarations.exported_names:
        line = source.line(main.offset)
        raise InvalidRequest(
            f"`main` (line {line}) is not exported: write `export async function main(...)` "
            "(a default export is not enough)"
        )
    summary, described = _jsdoc(main.doc)
    builder = _SchemaBuilder(parser, declarations, main.type_parameters)
    properties: dict[str, Schema] = {}
    required: list[str] = []
    try:
        for parameter in main.parameters:
            if parameter.name is None:
                builder.note(
                    parameter.line,
                    "a destructured parameter is not part of the form; it receives `undefined`",
                )
                continue
            if parameter.rest:
                builder.note(
                    parameter.line,
                    f"`...{parameter.name}` is not part of the form; it will always be empty",
                )
                continue
            schema, is_required = builder.field(
                parameter.name,
                parameter.type,
                parameter.line,
                optional=parameter.optional,
                has_default=parameter.has_default,
                default_ok=parameter.default_ok,
                default=parameter.default,
            )
            description = described.get(parameter.name) or parameter.description
            if description:
                schema["description"] = description
            properties[parameter.name] = schema
            if is_required:
                required.append(parameter.name)
    except RecursionError:
        raise InvalidRequest("the script's types are nested too deeply to be read") from None
    return ScriptSignature(
        language=language,
        schema=object_schema(properties, required, top_level=True),
        is_async=main.is_async,
        summary=summary,
        notes=tuple(builder.notes),
    )
