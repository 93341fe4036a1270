"""The pipeline's contract: topics, keys, typed records (Avro on the wire) and their codec.

Imports nothing else of ours. A consumer of ``scrape.results`` needs only this package::

    from schemas import Codec
    from schemas.records import ScrapeResult

    result = Codec().read(message.value, ScrapeResult)   # or read_any(...) for any record
    print(result.job_id, result.status, result.error_code)
"""

from schemas.codec import Codec, default_codec
from schemas.errors import DecodeError, ErrorCode
from schemas.keys import content_object_key, derived_id, screenshot_object_key, site_key
from schemas.topics import DELAYS_S, SPECS, TIER_ORDER, Key, Tier, TopicSet, TopicSpec, delay_bucket

__all__ = [
    "DELAYS_S",
    "SPECS",
    "TIER_ORDER",
    "Codec",
    "DecodeError",
    "ErrorCode",
    "Key",
    "Tier",
    "TopicSet",
    "TopicSpec",
    "content_object_key",
    "default_codec",
    "delay_bucket",
    "derived_id",
    "screenshot_object_key",
    "site_key",
]
