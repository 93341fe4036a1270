"""Avro single-object encoding for every record on our topics.

Wire format (Avro specification, "Single-object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary body

Readers find the writer schema by fingerprint among the ``.avsc`` files shipped in
``schemas/avro``, so any Avro library that knows these schemas can read our topics. Request
topics also accept a UTF-8 JSON object with the same fields (see :meth:`Codec.decode_request`),
so that ``kcat`` or a program in any language can publish jobs without an Avro library.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any, Final, TypeVar, cast

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.errors import DecodeError
from schemas.records import (
    RECORD_TYPES,
    Document,
    FetchOptions,
    Record,
    ScrapeRequest,
    ScrapeResult,
)
from schemas.text import UNPRINTABLE
from schemas.topics import TopicSpec

R = TypeVar("R", bound=Record)

MAGIC: Final = b"\xc3\x01"
HEADER_LEN: Final = 10

MAX_TENANT: Final = 200

RECORD_NAMES: Final = tuple(t.__name__ for t in RECORD_TYPES)
BY_NAME: Final[dict[str, type[Record]]] = {t.__name__: t for t in RECORD_TYPES}
_FIELDS: Final = {t: tuple(f.name for f in fields(t)) for t in RECORD_TYPES}
_OPTION_FIELDS: Final = tuple(f.name for f in fields(FetchOptions))
_DOCUMENT_FIELDS: Final = tuple(f.name for f in fields(Document))


@dataclass(frozen=True, slots=True)
class _Schema:
    name: str
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian, as written on the wire


def _load(name: str, path: str | None = None) -> _Schema:
    text = resources.files("schemas").joinpath("avro", path or f"{name}.avsc").read_text("utf-8")
    parsed = parse_schema(json.loads(text))
    canonical = to_parsing_canonical_form(parsed)
    # fastavro returns the CRC-64-AVRO fingerprint already as little-endian hex: wire order.
    return _Schema(
        name=name, parsed=parsed, fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    )


class Codec:
    """Encodes and decodes our records. Stateless after construction; safe to share."""

    def __init__(self) -> None:
        self._by_name: dict[str, _Schema] = {n: _load(n) for n in RECORD_NAMES}
        self._by_fp: dict[bytes, _Schema] = {s.fingerprint: s for s in self._by_name.values()}
        # Earlier versions of a record's schema, kept so that records they wrote (still on the
        # topics, or from producers not upgraded yet) are read into the current shape.
        history = resources.files("schemas").joinpath("avro", "history")
        for f in sorted(history.iterdir(), key=lambda f: f.name):
            if f.name.endswith(".avsc"):
                old = _load(f.name.split(".", 1)[0], f"history/{f.name}")
                self._by_fp.setdefault(old.fingerprint, old)

    # -- typed records --------------------------------------------------------------------------
    def write(self, record: Record) -> bytes:
        """``record`` single-object encoded with its current schema."""
        values = {name: getattr(record, name) for name in _FIELDS[type(record)]}
        if type(record) is ScrapeRequest:
            opts = record.options
            values["options"] = {name: getattr(opts, name) for name in _OPTION_FIELDS}
        elif type(record) is ScrapeResult and record.documents:
            values["documents"] = [
                {name: getattr(d, name) for name in _DOCUMENT_FIELDS} for d in record.documents
            ]
        return self._encode_schema(self._by_name[type(record).__name__], values)

    def read(self, data: bytes, expect: type[R]) -> R:
        """The record of type ``expect`` in ``data``; :class:`DecodeError` if it is not one."""
        return cast(R, _typed(expect, self.decode_values(data, expect=expect.__name__)[1]))

    def read_any(self, data: bytes) -> Record:
        """Whichever of our records ``data`` holds."""
        name, values = self.decode_values(data)
        return _typed(BY_NAME[name], values)

    def read_request(self, data: bytes) -> ScrapeRequest:
        """:meth:`decode_request`, typed."""
        return cast(ScrapeRequest, _typed(ScrapeRequest, self.decode_request_values(data)))

    def read_topic(self, spec: TopicSpec, data: bytes) -> Record:
        """The record ``spec``'s topic carries (requests also as JSON, see decode_request)."""
        if spec.value is None:
            raise DecodeError("raw_topic", f"{spec.base} carries raw bytes, not records")
        if spec.value == "ScrapeRequest":
            return self.read_request(data)
        return self.read(data, BY_NAME[spec.value])

    def fingerprint(self, name: str) -> bytes:
        """The 8-byte wire fingerprint of record ``name``."""
        return self._by_name[name].fingerprint

    def encode_values(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` as record type ``name`` (single-object encoding)."""
        return self._encode_schema(self._by_name[name], dict(record))

    @staticmethod
    def _encode_schema(schema: _Schema, values: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(schema.fingerprint)
        fastavro.schemaless_writer(buf, schema.parsed, values)
        return buf.getvalue()

    def decode_values(self, data: bytes, expect: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode one value; returns (record name, record).

        Raises :class:`DecodeError` with a reason a person can act on when the bytes are not a
        single-object-encoded record of ours (or not of type ``expect``).
        """
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError(
                "bad_magic", "value does not start with Avro single-object marker C3 01"
            )
        schema = self._by_fp.get(data[2:HEADER_LEN])
        if schema is None:
            raise DecodeError(
                "unknown_fingerprint",
                f"unknown writer schema fingerprint {data[2:HEADER_LEN].hex()}",
            )
        if expect is not None and schema.name != expect:
            raise DecodeError("wrong_type", f"expected {expect}, got {schema.name}")
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            reader = self._by_name[schema.name]
            record = fastavro.schemaless_reader(buf, schema.parsed, reader.parsed)
        except (EOFError, ValueError, UnicodeDecodeError, IndexError, struct.error) as exc:
            raise DecodeError("truncated", f"cannot decode {schema.name} body: {exc!r}") from exc
        if buf.tell() != len(data):
            raise DecodeError(
                "trailing_bytes", f"{len(data) - buf.tell()} bytes after {schema.name}"
            )
        return schema.name, cast(dict[str, Any], record)

    def decode_request_values(self, data: bytes) -> dict[str, Any]:
        """Decode a ScrapeRequest from Avro, or from a JSON object with the same fields.

        JSON defaults: ``job_id`` is required (producers own their ids, so a retry of the same
        publish is the same job); ``tenant`` defaults to ``"default"``; ``created_at`` may be
        epoch milliseconds or absent (then 0 → the processor treats it as "now").
        """
        if data.lstrip()[:1] in (b"{", b"["):
            record = self._request_from_json(data)
        else:
            record = self.decode_values(data, expect="ScrapeRequest")[1]
        return _check_ids(record)

    def _request_from_json(self, data: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError("invalid_json", f"value is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise DecodeError("invalid_json", "JSON value must be an object")
        doc.setdefault("tenant", "default")
        doc.setdefault("created_at", 0)
        doc.setdefault("options", {})
        schema = self._by_name["ScrapeRequest"].parsed
        try:
            # Validating through the writer fills defaults and checks every type exactly as the
            # Avro path would, so JSON and Avro producers get the same errors.
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, doc)
            buf.seek(0)
            return cast(dict[str, Any], fastavro.schemaless_reader(buf, schema, schema))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DecodeError(
                "invalid_record", f"JSON does not match ScrapeRequest: {exc}"
            ) from exc


def _check_ids(record: dict[str, Any]) -> dict[str, Any]:
    """A request's identity, checked once at decoding: the job id is a UUID (normalised to its
    canonical lower-case form: it names rows and objects) and the tenant a short printable
    string. A request failing these has no identity a job could end under: the DLQ gets it."""
    try:
        record["job_id"] = str(uuid.UUID(record["job_id"]))
    except ValueError as exc:
        raise DecodeError("invalid_job_id", f"job_id must be a UUID: {exc}") from exc
    tenant = record["tenant"]
    if not 0 < len(tenant) <= MAX_TENANT or UNPRINTABLE.search(tenant):
        raise DecodeError(
            "invalid_tenant", f"tenant must be 1-{MAX_TENANT} characters without control characters"
        )
    return record


def _typed(cls: type[Any], values: dict[str, Any]) -> Record:
    if cls is ScrapeRequest:
        values["options"] = FetchOptions(**values["options"])
    elif cls is ScrapeResult and values.get("documents"):
        values["documents"] = [Document(**d) for d in values["documents"]]
    return cast(Record, cls(**values))


@cache
def default_codec() -> Codec:
    """A process-wide codec (schemas are immutable package data)."""
    return Codec()
