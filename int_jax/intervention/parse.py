"""Read the `<intervention>{"location": 7, "content": "..."}</intervention>` block
at the end of a proposer's answer.

Model text is untrusted: nothing here evaluates it. The last block is parsed as
JSON; before that, one linear, string-aware pass rewrites the slips models
usually make (LaTeX backslashes that are not JSON escapes, raw newlines inside
strings, single-quoted strings, trailing commas, stray inner double quotes, code
fences, text around the object), and a location written as "Step 7", "Substep 7"
or "7-8" is read as 7. The last block that closes wins over a later bare tag.
Every repair applied is reported, so a run can count strict vs repaired parses.

Bounds: only the last `max_text_chars` of a response are searched, a block over
`max_block_chars` is unparsable, and the repair pass stops at a deadline.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time

MAX_TEXT_CHARS = 400_000
MAX_BLOCK_CHARS = 32_000
TIME_LIMIT_S = 1.0

_OPEN = re.compile(r"<[ \t]*intervention[ \t]*>", re.IGNORECASE)
_CLOSE = re.compile(r"<[ \t]*/[ \t]*intervention[ \t]*>", re.IGNORECASE)
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*[ \t]*\n?|\n?[ \t]*```$")
# "7", "Step 7", "step #7.", "Substep 5", "**Substep 5:**", and a range "5-6" / "Steps 5–6"
# read as its first number (as the authors' parser does).
_LOCATION = re.compile(r"^[\s*]*(?:sub[ -]?)?(?:steps?)?\s*#?\s*(\d{1,6})"
                       r"(?:\s*[-\u2013\u2014]\s*\d{1,6})?\s*[.:]?[\s*]*$", re.IGNORECASE)
# After `\n` these letters start a LaTeX command, not a newline (`\neq`, `\nabla`).
_LATEX_AFTER_N = frozenset({
    "ne", "neq", "nabla", "neg", "nu", "not", "notin", "ni", "nmid", "nleq", "ngeq", "nless",
    "ngtr", "nexists", "nsubseteq", "nsupseteq", "nparallel", "ncong", "nsim", "newline",
    "noindent", "nolimits", "nearrow", "nwarrow", "natural", "nleqslant", "ngeqslant", "nRightarrow",
})
_JSON_ESCAPES = frozenset('"\\/bfnrtu')
_HEX = frozenset("0123456789abcdefABCDEF")


class _Deadline(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class ParseResult:
    """`error` is None on success, else "no_block" or "unparsable" (with `detail`)."""

    location: int | None = None
    content: str | None = None
    repairs: tuple[str, ...] = ()
    error: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(error: str, detail: str, repairs=()) -> ParseResult:
    return ParseResult(error=error, detail=detail, repairs=tuple(repairs))


def last_block(text: str, max_text_chars: int = MAX_TEXT_CHARS) -> tuple[str | None, bool]:
    """Content of the last intervention block, and whether its closing tag was missing.

    The last *closed* block wins (from the last opening tag that some closing tag
    follows, to the first closing tag after it), so a bare mention of the tag after
    the block ("the <intervention> block above") changes nothing. Only when no block
    closes is the text after the last opening tag taken, as a cut-off answer.
    """
    tail = text[-max_text_chars:]
    last_close = None
    for m in _CLOSE.finditer(tail):
        last_close = m
    start = opened = None
    for m in _OPEN.finditer(tail):
        opened = m.end()
        if last_close is not None and m.end() <= last_close.start():
            start = m.end()
    if start is not None:
        return tail[start:_CLOSE.search(tail, start).start()], False
    if opened is None:
        return None, False
    return tail[opened:], True


def _word_after(s: str, i: int, limit: int = 16) -> str:
    j = i
    while j < len(s) and j - i < limit and s[j].isascii() and s[j].isalpha():
        j += 1
    return s[i:j]


def _closes_string(s: str, i: int) -> bool:
    """A quote at `i` ends a string when what follows is `,` `}` `]` `:` or the end."""
    j = i + 1
    while j < len(s) and s[j] in " \t\r\n":
        j += 1
    return j >= len(s) or s[j] in ",}]:"


def _repair(s: str, deadline: float) -> tuple[str, list[str]]:
    """One left-to-right pass that turns near-JSON into JSON; returns (text, repairs)."""
    out: list[str] = []
    repairs: set[str] = set()
    quote = None  # None outside a string, else the quote char that opened it
    i, n = 0, len(s)
    while i < n:
        if not i & 1023 and time.monotonic() > deadline:
            raise _Deadline()
        c = s[i]
        if quote is None:
            if c == '"':
                quote = c
                out.append('"')
            elif c == "'":
                quote = c
                out.append('"')
                repairs.add("single_quotes")
            elif c == ",":
                j = i + 1
                while j < n and s[j] in " \t\r\n":
                    j += 1
                if j < n and s[j] in "}]":
                    repairs.add("trailing_comma")
                else:
                    out.append(c)
            else:
                out.append(c)
            i += 1
            continue
        # Inside a string.
        if c == "\\":
            nxt = s[i + 1] if i + 1 < n else ""
            if quote == "'" and nxt == "'":
                out.append("'")
                i += 2
                continue
            latex = False
            if nxt in "bfrt":
                latex = len(_word_after(s, i + 1)) >= 2  # \frac \beta \theta \right \times
            elif nxt == "n":
                latex = _word_after(s, i + 1) in _LATEX_AFTER_N
            elif nxt == "u":
                latex = not (i + 5 < n and all(ch in _HEX for ch in s[i + 2:i + 6]))
            elif nxt not in _JSON_ESCAPES:
                latex = True  # \sqrt \alpha \( \{ : not a JSON escape at all
            if latex:
                out.append("\\\\")
                repairs.add("latex_backslash")
                i += 1
            else:
                out.append(c + nxt)
                i += 2
            continue
        if c == quote:
            if _closes_string(s, i):
                out.append('"')
                quote = None
            else:
                out.append('\\"' if c == '"' else "'")
                if c == '"':
                    repairs.add("inner_quote")
            i += 1
            continue
        if c == '"':  # inside a single-quoted string
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
            repairs.add("raw_newline")
        elif c == "\r":
            out.append("\\r")
            repairs.add("raw_newline")
        elif c == "\t":
            out.append("\\t")
            repairs.add("raw_control")
        elif ord(c) < 0x20:
            out.append(f"\\u{ord(c):04x}")
            repairs.add("raw_control")
        else:
            out.append(c)
        i += 1
    return "".join(out), sorted(repairs)


def _location(value) -> tuple[int | None, bool]:
    """(location, was_repaired); None when it is not a step number."""
    if isinstance(value, bool):
        return None, False
    if isinstance(value, int):
        return value, False
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return int(value), True
    if isinstance(value, str):
        m = _LOCATION.match(value[:64])
        if m:
            return int(m.group(1)), True
    return None, False


def _field(obj: dict, name: str):
    if name in obj:
        return obj[name], True
    for key, value in obj.items():
        if isinstance(key, str) and key.strip().lower() == name:
            return value, True
    return None, False


def parse_intervention(text: str, *, max_text_chars: int = MAX_TEXT_CHARS,
                       max_block_chars: int = MAX_BLOCK_CHARS,
                       time_limit_s: float = TIME_LIMIT_S) -> ParseResult:
    """Parse the last intervention block of `text`; never raises on model text."""
    if not isinstance(text, str):
        return _fail("unparsable", f"response is {type(text).__name__}, not text")
    deadline = time.monotonic() + time_limit_s
    block, unclosed = last_block(text, max_text_chars)
    if block is None:
        return _fail("no_block", "no <intervention> tag")
    repairs: list[str] = ["unclosed_block"] if unclosed else []
    if len(block) > max_block_chars:
        return _fail("unparsable", f"block of {len(block)} chars > {max_block_chars}", repairs)
    body = block.strip()
    fenced = _FENCE.sub("", body).strip()
    if fenced != body:
        repairs.append("code_fence")
        body = fenced
    first, last = body.find("{"), body.rfind("}")
    if first < 0:
        return _fail("unparsable", "no JSON object in the block", repairs)
    if last < first:  # cut off before the object closed
        body = body[first:] + "}"
        repairs.append("unclosed_object")
    else:
        if first > 0 or last < len(body) - 1:
            repairs.append("text_around_object")
        body = body[first:last + 1]
    try:
        fixed, pass_repairs = _repair(body, deadline)
    except _Deadline:
        return _fail("unparsable", f"repair pass over its {time_limit_s}s limit", repairs)
    obj = None
    for candidate, extra in ((fixed, pass_repairs), (body, [])):
        try:
            obj = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        repairs += extra
        break
    if obj is None:
        return _fail("unparsable", "not valid JSON after repairs", repairs)
    if not isinstance(obj, dict):
        return _fail("unparsable", f"JSON {type(obj).__name__}, not an object", repairs)
    raw_location, has_location = _field(obj, "location")
    content, has_content = _field(obj, "content")
    if not has_location:
        return _fail("unparsable", "no 'location' field", repairs)
    if not has_content:
        return _fail("unparsable", "no 'content' field", repairs)
    location, loc_repaired = _location(raw_location)
    if location is None:
        return _fail("unparsable", f"location {str(raw_location)[:40]!r} is not a step number",
                     repairs)
    if loc_repaired:
        repairs.append("location_string")
    if not isinstance(content, str):
        return _fail("unparsable", f"content is {type(content).__name__}, not text", repairs)
    return ParseResult(location=location, content=content, repairs=tuple(repairs))
