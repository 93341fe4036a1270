"""The http fetcher against real misbehaving servers on 127.0.0.1: every case ends in a clear
error code, memory stays bounded, and private addresses are refused unless allowlisted."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from schemas import ErrorCode
from streams.config import FetchConfig
from streams.errors import FetchError
from streams.fetchers.base import FetchRequest
from streams.fetchers.http import HttpFetcher
from tests.integration import hostile

pytestmark = pytest.mark.integration

CAP = 2 * 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@pytest.fixture
async def hostile_site() -> AsyncIterator[str]:
    # A second server that must stay unreachable (not in the allowlist).
    other = web.Application()
    other.router.add_get("/", lambda _r: web.Response(text="secret"))  # type: ignore[arg-type, return-value]
    other_runner, other_port = await _serve(other)
    runner, port = await _serve(hostile.app(f"127.0.0.1:{other_port}"))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await other_runner.cleanup()


async def _fetch(hostport: str, path: str, **cfg: object) -> bytes:
    settings: dict[str, object] = {"max_body_bytes": CAP, "timeout_s": 3, **cfg}
    config = FetchConfig(allow_private=(hostport,), **settings)  # type: ignore[arg-type]
    async with HttpFetcher(config) as fetcher:
        resp = await fetcher.fetch(FetchRequest(url=f"http://{hostport}{path}"))
        return resp.body


async def _code(hostport: str, path: str, **cfg: object) -> ErrorCode:
    with pytest.raises(FetchError) as info:
        await _fetch(hostport, path, **cfg)
    return info.value.code


async def test_allowlisted_private_target_is_fetched(hostile_site: str) -> None:
    assert await _fetch(hostile_site, "/ok") == b"<html>fine</html>"


# The fetch is measured in a process of its own: tracemalloc counts every thread of the process
# it runs in, and the suite's process also hosts the S3 endpoint (moto) that other stacks'
# sinks write to meanwhile (a full CI run once measured 10 MB that were not the fetch's).
_MEASURE_BOMB = """
import asyncio, sys, tracemalloc
from streams.config import FetchConfig
from streams.errors import FetchError
from streams.fetchers.base import FetchRequest
from streams.fetchers.http import HttpFetcher

async def main(hostport: str, cap: int) -> None:
    tracemalloc.start()
    config = FetchConfig(allow_private=(hostport,), max_body_bytes=cap, timeout_s=3)
    async with HttpFetcher(config) as fetcher:
        try:
            await fetcher.fetch(FetchRequest(url=f"http://{hostport}/bomb"))
            code = "none"
        except FetchError as exc:
            code = exc.code.value
    print(code, tracemalloc.get_traced_memory()[1])

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_gzip_bomb_stops_at_the_cap_with_bounded_memory(hostile_site: str) -> None:
    hostile.gzip_bomb()  # build it before measuring
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _MEASURE_BOMB,
        hostile_site,
        str(CAP),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    code, peak_text = out.decode().split()
    peak = int(peak_text)
    assert code == ErrorCode.TOO_LARGE.value
    assert peak < 4 * CAP, f"peak {peak} bytes while refusing a 512 MiB bomb with a {CAP}-byte cap"


async def test_body_over_cap_with_and_without_content_length(hostile_site: str) -> None:
    assert await _code(hostile_site, "/big") is ErrorCode.TOO_LARGE
    assert await _code(hostile_site, "/big-chunked") is ErrorCode.TOO_LARGE


async def test_slow_drip_hits_the_overall_deadline(hostile_site: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _code(hostile_site, "/drip", timeout_s=1.5) is ErrorCode.TIMEOUT
    assert loop.time() - started < 10  # far below 1000 s of dripping; not a tight timing check


async def test_redirect_loop_and_long_chain(hostile_site: str) -> None:
    assert await _code(hostile_site, "/loop") is ErrorCode.TOO_MANY_REDIRECTS
    assert await _code(hostile_site, "/chain/11", max_redirects=10) is ErrorCode.TOO_MANY_REDIRECTS
    assert await _fetch(hostile_site, "/chain/10", max_redirects=10) == b"end of chain"


async def test_oversized_headers_are_an_invalid_response(hostile_site: str) -> None:
    assert await _code(hostile_site, "/huge-header") is ErrorCode.INVALID_RESPONSE


async def test_unknown_charset_is_kept_as_bytes(hostile_site: str) -> None:
    assert await _fetch(hostile_site, "/bad-charset") == b"<html>caf\xe9 \xff\xfe</html>"


async def test_redirect_to_a_private_address_is_blocked(hostile_site: str) -> None:
    assert await _code(hostile_site, "/to-private") is ErrorCode.SSRF_BLOCKED


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f.1",
        "127.1.",
        "[::ffff:127.0.0.1]",
        "[::ffff:0:7f00:1]",  # SIIT
        "localhost",
    ],
)
async def test_loopback_is_blocked_by_default_in_every_spelling(
    hostile_site: str, host: str
) -> None:
    # The guard reads numeric spellings itself: refused as loopback, whatever aiohttp accepts.
    port = hostile_site.rsplit(":", 1)[1]
    async with HttpFetcher(FetchConfig(timeout_s=3)) as fetcher:
        with pytest.raises(FetchError) as info:
            await fetcher.fetch(FetchRequest(url=f"http://{host}:{port}/ok"))
    assert info.value.code is ErrorCode.SSRF_BLOCKED, info.value.message


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1"])
async def test_an_allowed_address_is_fetched_in_any_numeric_spelling(
    hostile_site: str, host: str
) -> None:
    # Sent as the dotted quad the guard judged (aiohttp 3.10+ refuses 127.1 itself).
    port = hostile_site.rsplit(":", 1)[1]
    config = FetchConfig(allow_private=(hostile_site,), timeout_s=3)
    async with HttpFetcher(config) as fetcher:
        resp = await fetcher.fetch(FetchRequest(url=f"http://{host}:{port}/ok"))
    assert resp.body == b"<html>fine</html>"


async def test_tls_failure_fails_closed(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/", lambda _r: web.Response(text="tls"))  # type: ignore[arg-type, return-value]
    runner, port = await _serve(app, ctx)
    try:
        config = FetchConfig(allow_private=(f"127.0.0.1:{port}",), timeout_s=3)
        async with HttpFetcher(config) as fetcher:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(FetchRequest(url=f"https://127.0.0.1:{port}/"))
        assert info.value.code is ErrorCode.TLS_ERROR
    finally:
        await runner.cleanup()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_a_cookie_one_job_receives_is_not_sent_with_the_next_job() -> None:
    """Through the real transport: jobs of different tenants share the worker's connections,
    never its cookies."""

    async def set_cookie(_request: web.Request) -> web.Response:
        resp = web.Response(text="hello")
        resp.set_cookie("sid", "tenant-a-session")
        return resp

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Cookie", "no cookie"))

    app = web.Application()
    app.router.add_get("/set", set_cookie)
    app.router.add_get("/echo", echo)
    runner, port = await _serve(app)
    try:
        config = FetchConfig(allow_private=(f"127.0.0.1:{port}",), timeout_s=3)
        async with HttpFetcher(config) as fetcher:
            await fetcher.fetch(FetchRequest(url=f"http://127.0.0.1:{port}/set"))
            resp = await fetcher.fetch(FetchRequest(url=f"http://127.0.0.1:{port}/echo"))
    finally:
        await runner.cleanup()
    assert resp.body == b"no cookie"
