"""The pipeline's contract: topics, keys, Avro records and their codec.

Imports nothing else of ours. A consumer of ``scrape.results`` needs only this package::

    from schemas import Codec, TopicSet
    name, result = Codec().decode(message.value)
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
