"""The browser tiers: render a page in Chromium (Playwright) and return its HTML.

Invariants:
- a job runs in a context that only its tenant's jobs (through the same egress proxy) use
  (``BrowserPool.keyed_context``: pages and cookies cleared between jobs, the HTTP cache never
  answers for the network), or in the persistent profile of its ``session_id`` (stealth tier),
  or in a fresh context when it has no tenant, or needs a route handler (below), or the pool
  keeps no contexts (``jobs_per_context=1``). Nothing is ever shared between two tenants' jobs;
- one overall deadline (``asyncio.timeout``) covers navigation, waits, content and screenshot;
  it starts once the job has a context (waiting for a free browser is the caller's queue);
- every connection Chromium makes for a job goes through the guard proxy
  (``streams/browser/guard_proxy.py``) on the job's own lease port: redirect hops,
  WebSockets, preconnects and subresources included, loopback and link-local too
  (``<-loopback>``). The proxy checks each target with the SSRF guard, connects to the checked
  address, and carries the job's egress proxy (``FetchRequest.proxy``) when it has one.
  Chromium resolves no name itself (``PROXIED_ARGS``) and WebRTC sends no UDP around the proxy
  (``BASE_ARGS``);
- a job with a resource-type blocklist or headers of its own gets the one ``route`` handler
  (blocklist, same-origin headers), and every request it routes also passes
  :meth:`BrowserFetcher._allow` (the same guard, defence in depth). Other jobs get none: a route
  handler makes Playwright pause every request of the context for a round trip to us, and the
  guard proxy already checks every connection;
- a main-frame navigation (or one of its redirect hops) the guard refused fails the job with
  ``ssrf_blocked``; one the egress proxy failed, with ``proxy_error`` (transient: the egress
  pool benches that proxy and moves on);
- rendered HTML and screenshots never exceed ``max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page, Request, Response, Route
from playwright.async_api import Error as PlaywrightError

from schemas import ErrorCode
from streams.browser.config import BrowserConfig
from streams.browser.errors import map_playwright_error, net_token
from streams.browser.guard_proxy import GUARD_HEADER, GuardProxy, Lease, ProxySettings
from streams.browser.pool import BrowserPool, Opener
from streams.browser.request import BrowserRequest, BrowserResponse
from streams.config import FetchConfig
from streams.errors import FatalError, FetchError, TransientError
from streams.fetchers.base import Fetcher, FetchRequest
from streams.fetchers.decompress import TooLarge
from streams.fetchers.ssrf import EgressGuard, SSRFBlocked

log = logging.getLogger(__name__)

__all__ = ["BrowserFetcher"]

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})

# Headers a job may not set on browser requests. Chromium re-sends headers that page.route
# added when the request is redirected, even to another origin (measured with Chromium 156), so
# credentials are not forwarded as headers; a Cookie header becomes cookies scoped to the URL.
_NOT_FORWARDED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "connection",
        "content-length",
        "transfer-encoding",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
    }
)


RouteAction = Literal["continue", "block_resource", "deny"]


def route_action(allowed: bool, resource_type: str, blocked: Iterable[str]) -> RouteAction:
    """What the route handler does with one request: the SSRF verdict first, then the blocklist.

    The main document is never blocked by type (its type is ``document``).
    """
    if not allowed:
        return "deny"
    if resource_type in blocked:
        return "block_resource"
    return "continue"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return (parts.scheme, parts.hostname or "", parts.port)


def _mime(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class _Job:
    """Per-job state shared by the route handler and the page listeners."""

    url: str
    blocked: frozenset[str]
    headers: dict[str, str]
    denied: list[str] = field(default_factory=list)
    document: Response | None = None  # latest main-frame document response
    crashed: bool = False
    download: bool = False  # the main document came as an attachment
    lease: Lease | None = None  # the job's identity at the guard proxy
    navigations: list[tuple[str, int]] = field(default_factory=list)  # main-frame host:ports

    @classmethod
    def of(cls, request: BrowserRequest) -> _Job:
        return cls(
            url=request.url,
            blocked=frozenset(request.block_resources),
            headers={k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED},
        )

    def guard_error(self) -> FetchError | None:
        """What the guard proxy met on the main frame's navigations: a refusal of any of them
        (redirect hops included) first, else the failure of the latest one, else None."""
        if self.lease is None or not self.navigations:
            return None
        for host, port in self.navigations:
            err = self.lease.failure(host, port)
            if isinstance(err, SSRFBlocked):
                return SSRFBlocked(err.message)
        last = self.lease.failure(*self.navigations[-1])
        if last is None:
            return None
        return type(last)(last.code, last.message, retry_after_s=last.retry_after_s)


class BrowserFetcher:
    """Renders pages in Chromium. Implements :class:`~streams.fetchers.base.Fetcher`.

    ``pool`` may be injected (and is then owned by the caller); otherwise the fetcher starts
    and closes its own :class:`BrowserPool` from ``browser``. The fetcher always runs its own
    guard proxy (started and closed with it).
    """

    def __init__(
        self,
        config: FetchConfig,
        browser: BrowserConfig | None = None,
        *,
        pool: BrowserPool | None = None,
        guard: EgressGuard | None = None,
    ) -> None:
        self._config = config
        self._guard = guard or EgressGuard(config.allow_private)
        self._owns_pool = pool is None
        self._pool = pool or BrowserPool(
            browser or BrowserConfig(), user_agent=config.effective_user_agent
        )
        self._proxy = GuardProxy(self._guard)
        self._stack = contextlib.AsyncExitStack()

    @property
    def pool(self) -> BrowserPool:
        return self._pool

    @property
    def guard_proxy(self) -> GuardProxy:
        return self._proxy

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._proxy)
            if self._owns_pool:
                await stack.enter_async_context(self._pool)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Browsers first (their connections end), then the proxy.
        await self._stack.__aexit__(et, e, tb)

    async def fetch(self, request: FetchRequest) -> BrowserResponse:
        return await self.fetch_browser(BrowserRequest.of(request))

    async def fetch_browser(self, request: BrowserRequest) -> BrowserResponse:
        scheme = urlsplit(request.url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FatalError(ErrorCode.INVALID_URL, f"unsupported scheme {scheme!r}")
        timeout_s = request.timeout_s or self._config.timeout_s
        cap = request.max_body_bytes or self._config.max_body_bytes
        job = _Job.of(request)
        try:
            async with self._context(request, job) as ctx:
                async with asyncio.timeout(timeout_s):
                    return await self._render(ctx, request, job, cap, timeout_s)
        except TimeoutError as exc:
            raise TransientError(
                ErrorCode.TIMEOUT, f"page not rendered within {timeout_s:g}s"
            ) from exc
        except FetchError:
            raise
        except PlaywrightError as exc:
            guarded = job.guard_error()
            if guarded is not None:
                raise guarded from exc
            if job.denied and net_token(exc) == "ERR_ACCESS_DENIED":
                raise FatalError(
                    ErrorCode.SSRF_BLOCKED, f"request to {job.denied[0]} not allowed"
                ) from exc
            if job.download:
                raise FatalError(
                    ErrorCode.HTTP_ERROR,
                    "the server sent this URL as a download (an attachment), not a page to "
                    "render; fetch it with the http tier",
                ) from exc
            if job.crashed:
                raise TransientError(
                    ErrorCode.CONNECTION_ERROR, "the page's renderer crashed"
                ) from exc
            raise map_playwright_error(exc, request.url) from exc

    @contextlib.asynccontextmanager
    async def _context(self, request: BrowserRequest, job: _Job) -> AsyncIterator[BrowserContext]:
        """The job's browser context, behind the guard proxy under the context's lease (through
        the job's egress proxy, if any). A lease ends after its context is closed."""
        if self._keeps_context(request, job):
            key = (request.tenant, request.proxy)
            opener = self._open_lease(request.proxy)
            async with self._pool.keyed_context(key, opener, self._proxy.server) as (ctx, lease):
                lease.forget_failures()  # what the context's earlier jobs met is theirs
                job.lease = lease
                yield ctx
            return
        async with self._proxy.lease(request.proxy) as lease:
            job.lease = lease
            proxy = lease.proxy_settings()
            if request.session_id is not None and request.tenant:
                context = self._pool.persistent_context(
                    request.tenant, request.session_id, proxy=proxy
                )
            else:
                context = self._pool.context(proxy=proxy, launch_proxy=self._proxy.server)
            async with context as ctx:
                yield ctx

    def _keeps_context(self, request: BrowserRequest, job: _Job) -> bool:
        """Whether the job may run in a context its tenant's earlier jobs used: not with a
        persistent profile, nor with a route handler (it is installed on the whole context)."""
        return (
            self._pool.config.jobs_per_context > 1
            and bool(request.tenant)
            and request.session_id is None
            and not job.blocked
            and not job.headers
        )

    def _open_lease(self, upstream: str | None) -> Opener:
        async def open_lease(stack: contextlib.AsyncExitStack) -> tuple[ProxySettings, Lease]:
            lease = await stack.enter_async_context(self._proxy.lease(upstream))
            return lease.proxy_settings(), lease

        return open_lease

    async def _allow(self, url: str) -> bool:
        """Whether a page may request ``url``: every request Playwright routes (documents,
        subresources, XHR/fetch; jobs with a blocklist or headers) passes the same SSRF guard as
        the http tier. Defence in depth: the guard proxy checks every connection again,
        including those Playwright does not route (redirect hops, WebSockets, preconnects)."""
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return True
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            await self._guard.resolve(parts.hostname, port)
        except SSRFBlocked as exc:
            log.info("browser request refused: %s", exc.message)
            return False
        except FetchError:
            return True  # DNS failures: the guard proxy meets them too and reports them
        return True

    async def _render(
        self,
        ctx: BrowserContext,
        request: BrowserRequest,
        job: _Job,
        cap: int,
        timeout_s: float,
    ) -> BrowserResponse:
        if job.blocked or job.headers:
            await ctx.route("**/*", lambda route: self._on_route(route, job))
        cookie = next((v for k, v in request.headers.items() if k.lower() == "cookie"), None)
        if cookie:
            await ctx.add_cookies(_cookies_for(request.url, cookie))
        page = ctx.pages[0] if ctx.pages else await ctx.new_page()
        page.set_default_timeout(timeout_s * 1000)
        page.set_default_navigation_timeout(timeout_s * 1000)
        page.on("crash", lambda _p: setattr(job, "crashed", True))
        page.on("download", lambda _d: setattr(job, "download", True))
        page.on("response", lambda r: _track_document(page, job, r))
        page.on("request", lambda r: _track_navigation(page, job, r))

        try:
            nav = await page.goto(request.url, wait_until=request.wait_until)
        except PlaywrightError as exc:
            # goto fails on an attachment before or after the page's "download" event arrives
            # (both orders seen). Such failures carry no net:: code: give the event a moment.
            if net_token(exc) is None and not job.download and not page.is_closed():
                with contextlib.suppress(PlaywrightError):
                    await page.wait_for_event("download", timeout=500)
            raise
        if nav is None:
            raise FatalError(ErrorCode.HTTP_ERROR, "no HTTP response for the main document")
        if request.wait_for:
            await page.wait_for_selector(request.wait_for, state="attached")
        doc = job.document or nav  # a script may have navigated since
        _raise_guard_errors(job, doc)
        content_type = doc.headers.get("content-type")
        if _mime(content_type) in _HTML_TYPES or not content_type:
            body = await _rendered_html(page, cap)
            content_type = "text/html; charset=utf-8"  # page.content() is text; we encode UTF-8
        else:
            # Not a document Chromium renders (JSON, text, XML...): keep the bytes as served.
            body = await doc.body()
            if len(body) > cap:
                raise TooLarge(cap)
        shot = None
        if request.screenshot is not None:
            shot = await page.screenshot(type="png", full_page=request.screenshot == "full")
            if len(shot) > cap:
                raise TooLarge(cap)
        headers, sizes = await asyncio.gather(doc.all_headers(), doc.request.sizes())
        return BrowserResponse(
            url=request.url,
            final_url=page.url,
            status=doc.status,
            headers=headers,
            body=body,
            content_type=content_type,
            wire_bytes=sizes["responseHeadersSize"] + sizes["responseBodySize"],
            redirects=_redirects(doc.request),
            screenshot=shot,
        )

    async def _on_route(self, route: Route, job: _Job) -> None:
        req = route.request
        try:
            allowed = await self._allow(req.url)
        except Exception:
            # Fail closed: a guard that cannot decide (resolver down...) lets nothing through.
            log.exception("the request guard failed on %s; denying it", req.url)
            allowed = False
        action = route_action(allowed, req.resource_type, job.blocked)
        try:
            if action == "deny":
                job.denied.append(req.url)
                await route.abort("accessdenied")  # net::ERR_ACCESS_DENIED
            elif action == "block_resource":
                await route.abort("blockedbyclient")
            elif job.headers and _origin(req.url) == _origin(job.url):
                await route.continue_(headers={**await req.all_headers(), **job.headers})
            else:
                await route.continue_()
        except PlaywrightError:
            # The page or context closed while this request waited; nothing left to route.
            pass


def _track_navigation(page: Page, job: _Job, request: Request) -> None:
    """Note the host:port of every main-frame navigation request, redirect hops included
    (Playwright reports those, although they never reach the route handler)."""
    if not request.is_navigation_request():
        return
    try:
        if request.frame != page.main_frame:
            return
    except PlaywrightError:
        return  # no frame (a service worker's or a popup's request)
    parts = urlsplit(request.url)
    if parts.scheme in ("http", "https") and parts.hostname:
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return
        job.navigations.append((parts.hostname.lower(), port))


def _raise_guard_errors(job: _Job, doc: Response) -> None:
    """After a navigation that "succeeded": fail the job if the guard proxy refused any
    main-frame navigation (for plain http Chromium renders the proxy's 403 answer as the page),
    or if the document is an answer the guard proxy made itself (a connect or egress failure)."""
    err = job.guard_error()
    if isinstance(err, SSRFBlocked):
        raise err
    lease = job.lease
    if lease is not None and doc.headers.get(GUARD_HEADER.lower()) == lease.marker:
        raise err or TransientError(
            ErrorCode.CONNECTION_ERROR, f"the guard proxy could not fetch {doc.url}"
        )


def _track_document(page: Page, job: _Job, response: Response) -> None:
    """Keep the latest main-frame document response (JS navigations replace the first one)."""
    request = response.request
    if not request.is_navigation_request() or response.frame != page.main_frame:
        return
    if 300 <= response.status < 400 and "location" in response.headers:
        return  # a redirect hop, not a document
    job.document = response


# The document as ``page.content()`` builds it (doctype + the <html> element), serialized once in
# the page, coming back only when it fits the cap (else its length; -1 if the page's scripts
# broke the serializers). They may replace the serializers, but ``"" + x`` is a string whose
# length they cannot fake: whatever they do, nothing over the cap is shipped to us.
_HTML_EXPR = """(() => {
  try {
    const d = document;
    let s = "" + (d.doctype ? new XMLSerializer().serializeToString(d.doctype) : "");
    if (d.documentElement) s += d.documentElement.outerHTML;
    return s.length <= %d ? s : s.length;
  } catch (e) {
    return -1;
  }
})()"""


async def _rendered_html(page: Page, cap: int) -> bytes:
    """The rendered HTML, in one ``evaluate``. ``page.content()`` (plus a size check before it)
    cost ~21 ms more CPU per page (measured, Chromium 156 headless shell, 4 at once): it
    injects Playwright's utility script into every page first."""
    expr = _HTML_EXPR % cap
    try:
        html = await page.evaluate(expr)
    except PlaywrightError:
        # A script navigated while we read; read the page it navigated to once it has loaded.
        await page.wait_for_load_state("load")
        html = await page.evaluate(expr)
    if isinstance(html, int) and html > cap:
        raise TooLarge(cap)
    if not isinstance(html, str):
        raise FatalError(ErrorCode.DECODE_ERROR, "the page's scripts broke its serializers")
    body = html.encode("utf-8", "replace")
    if len(body) > cap:
        raise TooLarge(cap)
    return body


def _redirects(request: Request) -> int:
    hops = 0
    previous = request.redirected_from
    while previous is not None:
        hops += 1
        previous = previous.redirected_from
    return hops


def _cookies_for(url: str, header: str) -> list[Any]:  # Playwright's SetCookieParam is private
    """Cookies of a ``Cookie`` request header, scoped to ``url`` (host-only, like a server's)."""
    cookies: list[Any] = []
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            cookies.append({"name": name, "value": value, "url": url})
    return cookies


if TYPE_CHECKING:

    def _implements_the_protocol(f: BrowserFetcher) -> Fetcher:
        return f
