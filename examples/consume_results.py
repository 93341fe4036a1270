"""Read scrape.results with fastavro and the .avsc files only (no Scrapifie code).

    pip install fastavro aiokafka
    python examples/consume_results.py [--bootstrap 127.0.0.1:9092] [--topic scrape.results]
                                       [--schemas schemas/avro] [--max N]

A record is Avro single-object encoded: C3 01, the writer schema's CRC-64-AVRO fingerprint (8
bytes, as the Avro spec, Java and fastavro compute it), the body. Writer schemas are found by
that fingerprint among the current and the historical .avsc files (schemas/avro/history/), and
each record is read into the current schema's shape.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form


def load_schemas(root: Path) -> tuple[dict[str, Any], dict[bytes, tuple[str, Any]]]:
    """(record name -> current schema, wire fingerprint -> (record name, writer schema))."""
    current: dict[str, Any] = {}
    writers: dict[bytes, tuple[str, Any]] = {}
    for path in sorted(root.glob("**/*.avsc")):
        doc = json.loads(path.read_text())
        schema = parse_schema(doc)
        wire = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
        writers[wire] = (doc["name"], schema)
        if path.parent.name != "history":
            current[doc["name"]] = schema
    return current, writers


def decode(
    value: bytes, current: dict[str, Any], writers: dict[bytes, tuple[str, Any]]
) -> tuple[str, dict[str, Any]]:
    if value[:2] != b"\xc3\x01":
        raise ValueError("not Avro single-object encoding")
    name, writer = writers[value[2:10]]  # KeyError: your .avsc copy is older than the producer
    return name, fastavro.schemaless_reader(io.BytesIO(value[10:]), writer, current[name])


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--topic", default="scrape.results")
    p.add_argument("--schemas", type=Path, default=Path("schemas/avro"))
    p.add_argument("--max", type=int, default=0, help="stop after this many records (0: never)")
    args = p.parse_args()
    current, writers = load_schemas(args.schemas)
    seen = 0
    async with AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, auto_offset_reset="earliest"
    ) as consumer:
        async for msg in consumer:
            _, r = decode(msg.value or b"", current, writers)
            body = gzip.decompress(r["content"]) if r["content"] else b""
            formats = [d["format"] for d in r["documents"]]
            print(r["job_id"], r["status"], r["error_code"] or r["http_status"], len(body), formats)
            seen += 1
            if seen == args.max:
                return


if __name__ == "__main__":
    asyncio.run(main())
