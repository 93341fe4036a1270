"""A local site that misbehaves on purpose, for the fetcher's hostile-response tests."""

from __future__ import annotations

import asyncio
import zlib
from functools import cache

from aiohttp import web


@cache
def gzip_bomb(decoded_mb: int = 512) -> bytes:
    obj = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    return b"".join(obj.compress(zeros) for _ in range(decoded_mb)) + obj.flush()


def app(private_target: str) -> web.Application:
    async def bomb(_r: web.Request) -> web.Response:
        return web.Response(
            body=gzip_bomb(), headers={"Content-Encoding": "gzip", "Content-Type": "text/html"}
        )

    async def big(_r: web.Request) -> web.Response:
        return web.Response(body=b"x" * (20 * 1024 * 1024), content_type="text/plain")

    async def big_chunked(r: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(r)
        chunk = b"y" * 65536
        try:
            for _ in range(20 * 16):  # 20 MiB, no Content-Length
                await resp.write(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def drip(r: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.content_length = 1000
        await resp.prepare(r)
        try:
            for _ in range(1000):
                await resp.write(b"a")
                await asyncio.sleep(1)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def loop(_r: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def chain(r: web.Request) -> web.Response:
        n = int(r.match_info["n"])
        if n <= 0:
            return web.Response(text="end of chain")
        raise web.HTTPFound(f"/chain/{n - 1}")

    async def huge_header(_r: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Huge": "h" * (64 * 1024)})

    async def to_private(_r: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{private_target}/")

    async def bad_charset(_r: web.Request) -> web.Response:
        return web.Response(
            body=b"<html>caf\xe9 \xff\xfe</html>",
            headers={"Content-Type": "text/html; charset=x-no-such-charset"},
        )

    async def ok(_r: web.Request) -> web.Response:
        return web.Response(text="<html>fine</html>", content_type="text/html")

    a = web.Application()
    a.router.add_get("/bomb", bomb)
    a.router.add_get("/big", big)
    a.router.add_get("/big-chunked", big_chunked)
    a.router.add_get("/drip", drip)
    a.router.add_get("/loop", loop)
    a.router.add_get("/chain/{n}", chain)
    a.router.add_get("/huge-header", huge_header)
    a.router.add_get("/to-private", to_private)
    a.router.add_get("/bad-charset", bad_charset)
    a.router.add_get("/ok", ok)
    return a
