"""A fetched page turned into the formats users ask for (``schemas.formats``): pure functions.

Imports only ``schemas`` and third-party libraries, so the worker, the gateway and the bench
all use the same code::

    from documents import derive

    docs = derive(body, content_type="text/html", url=final_url, status=200, headers=headers,
                  formats=["markdown", "links", "metadata"])
    docs["markdown"]  # bytes, UTF-8
"""

from documents._decode import decode_html
from documents._derive import derive
from documents._extract import parse_number
from documents._tree import MAX_INPUT_BYTES
from documents.shell import looks_like_js_shell

__all__ = ["MAX_INPUT_BYTES", "decode_html", "derive", "looks_like_js_shell", "parse_number"]
