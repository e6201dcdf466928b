"""Reading a form body while it streams in, with every size limit enforced on the way.

Three encodings: ``application/x-www-form-urlencoded``, ``multipart/form-data`` (attachments) and
JSON. Nothing is buffered beyond ``intake.max_body_kb``: the body is counted chunk by chunk and
refused (413) the moment it passes a limit. Field names and values are kept verbatim (CR/LF
included); they are data, and the delivery room is the one place that makes mail out of them.
"""

from __future__ import annotations

import codecs
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from postwatch.config import IntakeConfig
from postwatch.intake.submissions import UploadedFile

FieldValue = str | list[str]


class IntakeError(Exception):
    """A request the intake refuses: HTTP status, a metric reason and a message for the client."""

    def __init__(
        self, status: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = headers or {}


def too_large(message: str) -> IntakeError:
    return IntakeError(413, "too_large", message)


def malformed(message: str) -> IntakeError:
    return IntakeError(400, "malformed", message)


@dataclass(frozen=True)
class Limits:
    max_body: int
    max_attachment: int
    max_fields: int
    max_name: int
    max_value: int
    max_attachments: int

    @classmethod
    def from_config(cls, c: IntakeConfig) -> Limits:
        return cls(
            max_body=c.max_body_kb * 1024,
            max_attachment=c.max_attachment_kb * 1024,
            max_fields=c.max_fields,
            max_name=c.max_field_name_chars,
            max_value=c.max_field_value_chars,
            max_attachments=c.max_attachments,
        )


@dataclass
class Parsed:
    fields: dict[str, FieldValue] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)
    is_json: bool = False
    count: int = 0


class _Fields:
    """Collects fields; repeated names become lists; enforces the count and length caps."""

    def __init__(self, limits: Limits, parsed: Parsed) -> None:
        self.limits = limits
        self.parsed = parsed

    def add(self, name: str, value: str) -> None:
        lim = self.limits
        if not name:
            raise malformed("a field without a name")
        if "\x00" in name or "\x00" in value:
            raise malformed(f"field {name[:40]!r} contains a NUL character")
        if len(name) > lim.max_name:
            raise malformed(f"field name {name[:40]!r}... is longer than {lim.max_name} characters")
        if len(value) > lim.max_value:
            raise too_large(f"field {name!r} is longer than {lim.max_value} characters")
        self.parsed.count += 1
        if self.parsed.count > lim.max_fields:
            raise too_large(f"more than {lim.max_fields} fields")
        prior = self.parsed.fields.get(name)
        if prior is None:
            self.parsed.fields[name] = value
        elif isinstance(prior, list):
            prior.append(value)
        else:
            self.parsed.fields[name] = [prior, value]


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit:
            raise too_large(f"request body larger than {limit // 1024} KB")
    return bytes(buf)


#: the charsets a urlencoded body may declare (by Python codec name): what browsers send.
#: Others (punycode, idna, utf-7, rot13, base64, zlib...) are codecs, not form charsets.
CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1", "iso8859-15", "cp1252"})


def _charset(params: dict[bytes, bytes]) -> str:
    cs = params.get(b"charset", b"utf-8").decode("latin-1").strip().strip('"').lower() or "utf-8"
    try:
        name = codecs.lookup(cs).name
    except (LookupError, ValueError):
        name = ""
    if name not in CHARSETS:
        raise IntakeError(
            415,
            "unsupported_type",
            f"unsupported charset {cs[:40]!r}; send utf-8 (or us-ascii, iso-8859-1, "
            "iso-8859-15, windows-1252)",
        )
    return name


async def parse_body(
    content_type: str | None, chunks: AsyncIterator[bytes], limits: Limits
) -> Parsed:
    """Parse a body by its Content-Type; raises IntakeError (400/413/415) naming the problem."""
    if not content_type:
        raise IntakeError(
            415,
            "unsupported_type",
            "missing Content-Type; send application/x-www-form-urlencoded, "
            "multipart/form-data or application/json",
        )
    ctype_b, params = parse_options_header(content_type)
    ctype = ctype_b.decode("latin-1").lower()
    parsed = Parsed()
    fields = _Fields(limits, parsed)
    if ctype == "application/x-www-form-urlencoded":
        raw = await read_limited(chunks, limits.max_body)
        _parse_urlencoded(raw, _charset(params), fields)
    elif ctype == "application/json" or (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raw = await read_limited(chunks, limits.max_body)
        _parse_json(raw, fields)
        parsed.is_json = True
    elif ctype == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise malformed("multipart/form-data without a boundary parameter")
        await _parse_multipart(boundary, chunks, limits, fields, parsed)
    else:
        raise IntakeError(
            415,
            "unsupported_type",
            f"unsupported Content-Type {ctype!r}; send application/x-www-form-urlencoded, "
            "multipart/form-data or application/json",
        )
    return parsed


def _parse_urlencoded(raw: bytes, charset: str, fields: _Fields) -> None:
    try:
        text = raw.decode(charset)
    except UnicodeError as exc:
        where = f" (byte {exc.start})" if isinstance(exc, UnicodeDecodeError) else ""
        raise malformed(f"body is not valid {charset}{where}") from None
    for pair in text.split("&"):
        if not pair:
            continue
        name, _eq, value = pair.partition("=")
        try:
            name = urllib.parse.unquote_plus(name, encoding=charset, errors="strict")
            value = urllib.parse.unquote_plus(value, encoding=charset, errors="strict")
        except UnicodeError:
            raise malformed(f"a percent-encoded field is not valid {charset}") from None
        fields.add(name, value)


def _scalar(name: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, bool | int | float):
        return json.dumps(v)
    raise malformed(f"field {name!r}: nested objects are not supported; send text values")


def _parse_json(raw: bytes, fields: _Fields) -> None:
    try:
        data = json.loads(raw)
    except RecursionError:
        raise malformed("body is JSON nested too deep; send an object of text values") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise malformed(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise malformed("JSON body must be an object of field names to values")
    try:  # JSON may carry lone surrogates ("\ud800"): not text any store can keep
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise malformed("JSON body holds invalid Unicode (a lone surrogate)") from None
    for name, v in data.items():
        if isinstance(v, list):
            if not v:
                fields.add(name, "")
            for item in v:
                fields.add(name, _scalar(name, item))
        else:
            fields.add(name, _scalar(name, v))


_UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(raw: str) -> str:
    """The last path component, without control characters, at most 255 characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_FILENAME.sub("_", name).strip() or "attachment"
    return name[-255:]


class _Multipart:
    def __init__(self, limits: Limits, fields: _Fields, parsed: Parsed) -> None:
        self.limits = limits
        self.fields = fields
        self.parsed = parsed
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.filename: str | None = None
        self.ctype = "application/octet-stream"
        self.data = bytearray()
        self.cap = 0
        self.ended = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.headers = {}
        self.data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field = bytearray()
        self.header_value = bytearray()

    def on_headers_finished(self) -> None:
        disp, opts = parse_options_header(self.headers.get(b"content-disposition"))
        if disp.lower() != b"form-data" or b"name" not in opts:
            raise malformed("a multipart part without Content-Disposition: form-data; name=...")
        try:
            self.name = opts[b"name"].decode("utf-8")
            fn = opts.get(b"filename")
            self.filename = fn.decode("utf-8") if fn is not None else None
        except UnicodeDecodeError:
            raise malformed("a multipart field name or filename is not UTF-8") from None
        ct = self.headers.get(b"content-type", b"application/octet-stream")
        ctype = _UNSAFE_FILENAME.sub("", ct.decode("latin-1")).strip()[:255]
        self.ctype = ctype or "application/octet-stream"
        if self.filename is not None:
            self.cap = self.limits.max_attachment
        else:
            # a text value: at most 4 bytes per character in UTF-8
            self.cap = self.limits.max_value * 4

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.data += data[start:end]
        if len(self.data) > self.cap:
            if self.filename is not None:
                raise too_large(
                    f"attachment {self.filename!r} (field {self.name!r}) is larger than "
                    f"{self.limits.max_attachment // 1024} KB"
                )
            raise too_large(
                f"field {self.name!r} is longer than {self.limits.max_value} characters"
            )

    def on_part_end(self) -> None:
        if self.filename is not None:
            if not self.filename and not self.data:
                return  # a file input left empty by the browser
            if len(self.parsed.files) >= self.limits.max_attachments:
                raise too_large(f"more than {self.limits.max_attachments} attachments")
            self.parsed.files.append(
                UploadedFile(
                    field=self.name,
                    filename=safe_filename(self.filename),
                    content_type=self.ctype,
                    data=bytes(self.data),
                )
            )
            return
        try:
            value = self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise malformed(f"field {self.name!r} is not valid UTF-8 (byte {exc.start})") from None
        self.fields.add(self.name, value)

    def on_end(self) -> None:
        self.ended = True


async def _parse_multipart(
    boundary: bytes, chunks: AsyncIterator[bytes], limits: Limits, fields: _Fields, parsed: Parsed
) -> None:
    state = _Multipart(limits, fields, parsed)
    try:
        parser = MultipartParser(boundary, state.callbacks())  # type: ignore[arg-type]
    except (ValueError, MultipartParseError) as exc:
        raise malformed(f"bad multipart boundary: {exc}") from None
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > limits.max_body:
                raise too_large(f"request body larger than {limits.max_body // 1024} KB")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise malformed(f"malformed multipart body: {exc}") from None
    if not state.ended:
        raise malformed("multipart body ended before its closing boundary")
