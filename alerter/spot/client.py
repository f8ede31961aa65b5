"""HTTP requests to SPOT: one aiohttp session, URLs, and every outcome classified.

Library errors stop here: callers see a FeedPage or a FeedError (see `alerter.errors`).
The feed password travels in the query string, so no error text built here ever
contains a URL; and since a server may echo the URL (or the password, escaped, cut
short) in its body, a parse error that quotes the body is told from a copy masked by
`alerter.masking` (every spelling of the password, and of any registered secret).
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

import aiohttp

from alerter import masking
from alerter.errors import FeedBlocked, FeedConfigFault, FeedError, FeedUnavailable
from alerter.models import FeedPage
from alerter.settings import FeedConfig
from alerter.spot.parse import format_spot_datetime, parse_feed

Endpoint = Literal["message", "latest"]

#: A SPOT page is a few kB; anything far larger is not a SPOT answer.
MAX_BODY = 4 * 1024 * 1024


def classify_status(status: int) -> FeedError | None:
    """The error an HTTP status means, or None when the body should be read."""
    if status == 200:
        return None
    if status == 403:
        return FeedBlocked("HTTP 403: SPOT blocked this IP or feed")
    if status == 429:
        # SPOT's way is 403; a 429 says the same thing: back off hard, tell the admins.
        return FeedBlocked("HTTP 429: SPOT says too many requests")
    if status in (401, 404):
        return FeedConfigFault(f"HTTP {status}", "SPOT does not know this feed URL")
    return FeedUnavailable(f"HTTP {status}")


def format_spot_date(t: float) -> str:
    """SPOT's date format; `-0000` because an unencoded `+` arrives as a space."""
    return format_spot_datetime(t, "-0000")


def _rebuilt(error: FeedError, secret: str | None) -> FeedError:
    """A new error of the same kind, its text masked (no cause or context to leak)."""
    if isinstance(error, FeedConfigFault):
        code = None if error.code is None else masking.mask(error.code, secret)
        return FeedConfigFault(code, masking.mask(error.text, secret))
    return type(error)(masking.mask(str(error), secret))


def _masked_parse_error(
    error: FeedError, body: bytes, fmt: Literal["xml", "json"], secret: str | None
) -> FeedError | None:
    """`error` told without any secret, or None when it holds none (raise it as it is).

    The body is masked and parsed again, so an excerpt shows `***` where the password
    stood rather than whatever part of it the excerpt's cut left, and a body that only
    the echoed password made invalid (a raw `&` in XML) is told for what it says (the
    password is wrong). Masking never turns a config fault into a transient error, and a
    masked body that parses keeps the first error. The text is then masked too: a parser
    decodes `&amp;` or `\\u0026` back into the password itself.
    """
    masked_body = masking.mask_bytes(body, secret)
    told = error
    if masked_body != body:
        try:
            parse_feed(masked_body, fmt)
        except FeedError as again:
            if isinstance(again, FeedConfigFault) or not isinstance(error, FeedConfigFault):
                told = again
    rebuilt = _rebuilt(told, secret)
    if told is error and str(rebuilt) == str(error):
        return None
    return rebuilt


class FeedSource(Protocol):
    """Where the watcher gets feed pages (the SPOT client, or a test's fake)."""

    async def fetch(
        self, feed: FeedConfig, endpoint: Endpoint = "message", *, start: int | None = None
    ) -> FeedPage:
        """One request: a FeedPage, or a FeedError."""
        ...


class FeedClient:
    """Fetches feed pages; never retries by itself (the scheduler owns every request)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        fmt: Literal["xml", "json"] = "xml",
        timeout: float = 30.0,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.fmt = fmt
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def url(self, feed_id: str, endpoint: Endpoint) -> str:
        """The endpoint's URL, without the query."""
        return f"{self.base_url}/{feed_id}/{endpoint}.{self.fmt}"

    async def fetch(
        self,
        feed: FeedConfig,
        endpoint: Endpoint = "message",
        *,
        start: int | None = None,
        start_date: float | None = None,
        end_date: float | None = None,
    ) -> FeedPage:
        """One request; a FeedPage, or FeedUnavailable / FeedBlocked / FeedConfigFault."""
        params: dict[str, str] = {}
        if start is not None and start > 1:
            params["start"] = str(start)
        if start_date is not None:
            params["startDate"] = format_spot_date(start_date)
        if end_date is not None:
            params["endDate"] = format_spot_date(end_date)
        if feed.password is not None:
            params["feedPassword"] = feed.password.get_secret_value()
        try:
            async with self.session.get(
                self.url(feed.id, endpoint), params=params, timeout=self.timeout
            ) as resp:
                error = classify_status(resp.status)
                if error is not None:
                    raise error
                body = await self._read(resp)
        except FeedError:
            raise
        except TimeoutError:
            raise FeedUnavailable("timed out") from None
        except aiohttp.ClientConnectorError as exc:
            raise FeedUnavailable(f"cannot connect: {exc.os_error.strerror or 'refused'}") from None
        except aiohttp.ClientPayloadError:
            raise FeedUnavailable("truncated response") from None
        except aiohttp.ClientError as exc:
            raise FeedUnavailable(f"connection failed: {type(exc).__name__}") from None
        except asyncio.CancelledError:
            raise
        secret = feed.password.get_secret_value() if feed.password is not None else None
        try:
            return parse_feed(body, self.fmt)
        except FeedError as exc:
            # Parse errors quote the body, and a server may echo the request URL in it.
            masked = _masked_parse_error(exc, body, self.fmt, secret)
            if masked is None:
                raise
        # Raised outside the handler: the masked error carries no context to the first one.
        raise masked

    @staticmethod
    async def _read(resp: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > MAX_BODY:
                raise FeedUnavailable("response larger than any SPOT page")
            chunks.append(chunk)
        return b"".join(chunks)
