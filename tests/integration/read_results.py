"""A downstream consumer that needs nothing of Scrapifie but ``schemas``: reads scrape.results
and prints one JSON line per result. Run as a script by the integration tests, which also check
that it imported neither ``streams`` nor ``connectors``.

    python read_results.py BOOTSTRAP TOPIC_PREFIX EXPECTED_COUNT TIMEOUT_S
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer

from schemas import Codec, TopicSet
from schemas.records import ScrapeResult


async def main(bootstrap: str, prefix: str, expected: int, timeout_s: float) -> None:
    codec = Codec()
    consumer = AIOKafkaConsumer(
        TopicSet(prefix).results,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=17 * 1024 * 1024,
    )
    await consumer.start()
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for m in msgs:
                    r = codec.read(m.value, ScrapeResult)
                    print(
                        json.dumps(
                            {
                                "job_id": r.job_id,
                                "status": r.status,
                                "content_sha256": r.content_sha256,
                            }
                        ),
                        flush=True,
                    )
                    seen += 1
    finally:
        await consumer.stop()
    assert "streams" not in sys.modules and "connectors" not in sys.modules, "imports leaked"


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
