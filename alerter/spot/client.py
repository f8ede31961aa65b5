"""HTTP requests to SPOT: one aiohttp session, URLs, and every outcome classified.

Library errors stop here: callers see a FeedPage or a FeedError (see `alerter.errors`).
The feed password travels in the query string, so no error text built here ever
contains a URL.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol
from urllib.parse import quote, quote_plus

import aiohttp

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


def _spellings(secret: str) -> set[bytes]:
    """How a password may appear in a body that echoes the request URL."""
    return {secret.encode(), quote(secret, safe="").encode(), quote_plus(secret).encode()} - {b""}


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
        try:
            return parse_feed(body, self.fmt)
        except FeedError:
            # Parse errors quote the body, and a server may echo the request URL in it:
            # when the body holds the password, the error is told from a masked copy.
            secret = feed.password.get_secret_value() if feed.password is not None else ""
            if not secret or not any(s in body for s in _spellings(secret)):
                raise
        masked = body
        for s in _spellings(secret):
            masked = masked.replace(s, b"***")
        try:
            parse_feed(masked, self.fmt)
        except FeedError as exc:
            raise exc from None
        raise FeedUnavailable("a response that quotes the feed password") from None

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
