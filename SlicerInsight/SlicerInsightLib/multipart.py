"""multipart/form-data parsing without the ``cgi`` module (removed in Python 3.13).

MONAI Label answers ``POST /infer/<model>`` with a ``multipart/form-data`` body: a ``params`` part
(JSON) and an ``image`` part (the result file, binary). This module splits such a body by its
boundary (RFC 2046 section 5.1.1): the part contents are taken byte for byte, so binary data holding
CRLF pairs or ``--`` sequences is returned unchanged; only a full delimiter line ends a part.

Pure standard library; runs in Slicer's Python 3.9 to 3.12.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .errors import MalformedAnswerError

__all__ = ["MultipartError", "Part", "parse_header_params", "parse_multipart", "boundary_from_content_type"]

logger = logging.getLogger(__name__)

#: RFC 2046: a boundary is 1 to 70 characters.
MAX_BOUNDARY_LENGTH = 70


class MultipartError(MalformedAnswerError):
    """The body is not valid multipart/form-data (no boundary, no closing delimiter, bad part headers)."""


@dataclass
class Part:
    """One part of a multipart body.

    Attributes:
        headers: the part's headers, names lower-cased (``content-disposition``, ``content-type``...).
        content: the part's bytes, exactly as sent.
        name: the ``name`` of its Content-Disposition (the form field), or None.
        filename: the ``filename`` (or RFC 5987 ``filename*``) of its Content-Disposition, or None.
    """

    headers: Dict[str, str] = field(default_factory=dict)
    content: bytes = b""
    name: Optional[str] = None
    filename: Optional[str] = None

    @property
    def content_type(self) -> str:
        """The part's media type, lower-cased, without parameters ('' when not given)."""
        value, _ = parse_header_params(self.headers.get("content-type", ""))
        return value.lower()

    def text(self, encoding: Optional[str] = None) -> str:
        """The content decoded as text (the part's charset, else UTF-8)."""
        _, params = parse_header_params(self.headers.get("content-type", ""))
        return self.content.decode(encoding or params.get("charset") or "utf-8")


def parse_header_params(value: str) -> Tuple[str, Dict[str, str]]:
    """Split a header value such as ``form-data; name="image"; filename="a b.nii.gz"``.

    Returns the main value and a dict of parameters (names lower-cased). Quoted strings may hold
    ``;`` and backslash escapes; ``filename*=UTF-8''...`` (RFC 5987) is decoded into ``filename``.
    """
    items = _split_unquoted(value, ";")
    main = items[0].strip() if items else ""
    params: Dict[str, str] = {}
    extended: Dict[str, str] = {}
    for item in items[1:]:
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not key or not sep:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = _unquote(raw[1:-1])
        if key.endswith("*"):
            extended[key[:-1]] = _decode_rfc5987(raw)
        else:
            params[key] = raw
    params.update(extended)  # an extended value wins over the plain one (RFC 6266 section 4.3)
    return main, params


def boundary_from_content_type(content_type: str) -> bytes:
    """The boundary of a ``multipart/...; boundary=...`` Content-Type header.

    Raises:
        MultipartError: not a multipart type, or no usable boundary.
    """
    media_type, params = parse_header_params(content_type or "")
    if not media_type.lower().startswith("multipart/"):
        raise MultipartError(f"expected a multipart answer, got content-type {content_type!r}")
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(f"multipart answer without a usable boundary (content-type {content_type!r})")
    try:
        return boundary.encode("ascii")
    except UnicodeEncodeError as err:
        raise MultipartError(f"multipart boundary is not ASCII: {boundary!r}") from err


def parse_multipart(body: bytes, content_type: str) -> List[Part]:
    """Split a multipart body into its parts.

    Args:
        body: the whole HTTP body.
        content_type: the response's Content-Type header (holds the boundary).

    Returns:
        The parts in order (the preamble and epilogue are dropped).

    Raises:
        MultipartError: no boundary, no opening or closing delimiter, or a part without a header block.
    """
    boundary = boundary_from_content_type(content_type)
    delimiter = b"--" + boundary
    position = _first_delimiter(body, delimiter)
    parts: List[Part] = []
    while True:
        after = position + len(delimiter)
        if body[after:after + 2] == b"--":  # close delimiter
            return parts
        line_end = _end_of_delimiter_line(body, after)
        if line_end < 0:
            raise MultipartError("multipart answer is truncated: a delimiter line does not end")
        start = line_end
        end = _next_delimiter(body, delimiter, start)
        if end < 0:
            raise MultipartError("multipart answer is truncated: no closing boundary after part "
                                 f"{len(parts) + 1}")
        parts.append(_parse_part(body[start:end], len(parts) + 1))
        position = end + 2  # skip the CRLF that belongs to the delimiter


def _first_delimiter(body: bytes, delimiter: bytes) -> int:
    if body.startswith(delimiter):
        return 0
    index = body.find(b"\r\n" + delimiter)
    while index >= 0:
        if _is_delimiter_at(body, index + 2, delimiter):
            return index + 2
        index = body.find(b"\r\n" + delimiter, index + 1)
    raise MultipartError("multipart answer holds no part (its boundary never appears)")


def _next_delimiter(body: bytes, delimiter: bytes, start: int) -> int:
    """Index of the CRLF that starts the next delimiter line at or after ``start`` (-1 if none)."""
    needle = b"\r\n" + delimiter
    index = body.find(needle, start)
    while index >= 0:
        if _is_delimiter_at(body, index + 2, delimiter):
            return index
        index = body.find(needle, index + 1)
    return -1


def _is_delimiter_at(body: bytes, index: int, delimiter: bytes) -> bool:
    """True when a full delimiter line starts at ``index``: the delimiter, then ``--``, or optional
    transport padding (spaces, tabs) and a line end, or the end of the body."""
    if not body.startswith(delimiter, index):
        return False
    after = index + len(delimiter)
    if body[after:after + 2] == b"--":
        return True
    return _end_of_delimiter_line(body, after) >= 0 or after == len(body)


def _end_of_delimiter_line(body: bytes, index: int) -> int:
    """Index just past the line end after a delimiter (skipping transport padding), or -1."""
    while index < len(body) and body[index:index + 1] in (b" ", b"\t"):
        index += 1
    if body[index:index + 2] == b"\r\n":
        return index + 2
    if body[index:index + 1] == b"\n":  # tolerated: bare LF line ends
        return index + 1
    return -1


def _parse_part(raw: bytes, number: int) -> Part:
    if not raw:  # no headers, no content
        return Part()
    if raw.startswith(b"\r\n"):  # no headers at all
        header_block, content = b"", raw[2:]
    else:
        split = raw.find(b"\r\n\r\n")
        separator = 4
        if split < 0:
            split, separator = raw.find(b"\n\n"), 2
        if split < 0:
            raise MultipartError(f"part {number} of the multipart answer has no header block")
        header_block, content = raw[:split], raw[split + separator:]
    headers = _parse_headers(header_block, number)
    _, params = parse_header_params(headers.get("content-disposition", ""))
    return Part(headers=headers, content=content, name=params.get("name"), filename=params.get("filename"))


def _parse_headers(block: bytes, number: int) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    last: Optional[str] = None
    text = block.decode("utf-8", errors="replace")
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # folded continuation line
            headers[last] += " " + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise MultipartError(f"part {number} of the multipart answer has a bad header line: {line[:80]!r}")
        last = key.strip().lower()
        headers[last] = value.strip()
    return headers


def _split_unquoted(value: str, separator: str) -> List[str]:
    items: List[str] = []
    current: List[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _unquote(value: str) -> str:
    out: List[str] = []
    escaped = False
    for char in value:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            out.append(char)
    return "".join(out)


def _decode_rfc5987(value: str) -> str:
    """``UTF-8''na%C3%AFve.nii.gz`` -> ``naïve.nii.gz`` (the value itself when not in that form)."""
    charset, sep, rest = value.partition("'")
    if not sep:
        return urllib.parse.unquote(value)
    _language, sep, encoded = rest.partition("'")
    if not sep:
        return urllib.parse.unquote(value)
    try:
        return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return urllib.parse.unquote(encoded, encoding="latin-1")
