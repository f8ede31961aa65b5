"""`GET` and `POST /ack/{token}`: the acknowledgement page (the edge; see `alerter.web.ack`).

- A GET shows the incident and the form; it never acknowledges (chat apps and mail
  scanners fetch links to preview them).
- A POST acknowledges, once: it must carry the form's proof for this token (403 without
  it, with a wrong or an expired one, or when the request says it came from another
  site); a second POST says who took it and when.
- A token the desk does not know (forged, altered, its incident resolved or unknown) is
  the same 404 as any unknown path: the page says nothing about any incident.
- Both are rate-limited per client address (429 with a plain page).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

from aiohttp import hdrs, web

from alerter.ack import clean_name
from alerter.clock import Clock
from alerter.web import pages
from alerter.web.ack import AckDesk, FormProof, IncidentView, TakeStatus
from alerter.web.guard import RateLimiter, client_address, foreign_request
from alerter.web.pages import Html

log = logging.getLogger("alerter.web")

#: Requests to /ack/... per client address per minute.
ACK_GETS_PER_MINUTE = 30
ACK_POSTS_PER_MINUTE = 10
#: The largest form body accepted (a name and a proof).
FORM_MAX = 4096


class AckViews:
    """The acknowledgement page's handlers for one server."""

    def __init__(
        self,
        desk: AckDesk | None,
        clock: Clock,
        zone: ZoneInfo,
        proof: FormProof,
        public_url: str | None,
        page: Callable[[Html, int], web.Response],
        *,
        gets: RateLimiter | None = None,
        posts: RateLimiter | None = None,
    ) -> None:
        self.desk = desk
        self.clock = clock
        self.zone = zone
        self.proof = proof
        self.public_url = public_url
        self._page = page
        self.gets = gets or RateLimiter(ACK_GETS_PER_MINUTE)
        self.posts = posts or RateLimiter(ACK_POSTS_PER_MINUTE)

    async def get(self, request: web.Request) -> web.StreamResponse:
        """The incident and the form (never acknowledges)."""
        if not self.gets.hit(client_address(request)):
            return self._too_many()
        token = request.match_info["token"]
        view = self.desk.view(token) if self.desk is not None else None
        if view is None:
            raise web.HTTPNotFound
        now = self.clock.now()
        return self._page(pages.ack_page(view, self.proof.issue(token, now), now, self.zone), 200)

    async def post(self, request: web.Request) -> web.StreamResponse:
        """Acknowledge, with the form's proof."""
        if not self.posts.hit(client_address(request)):
            return self._too_many()
        token = request.match_info["token"]
        view = self.desk.view(token) if self.desk is not None else None
        if view is None or self.desk is None:
            raise web.HTTPNotFound
        if foreign_request(request, self.public_url):
            log.warning("ack: a POST from another site was refused")
            return self._page(pages.refused_page(), 403)
        if (request.content_length or 0) > FORM_MAX:
            return self._page(pages.refused_page(), 413)
        form = await request.post()
        proof, raw_name = form.get("proof"), form.get("name")
        now = self.clock.now()
        if not isinstance(proof, str) or not self.proof.check(token, proof, now):
            return self._page(pages.refused_page(), 403)
        name = (clean_name(raw_name) if isinstance(raw_name, str) else None) or ""
        if not name and view.taken_by is None:
            return self._ask_for_a_name(view, token, now)
        try:
            result = self.desk.take(token, name or "someone")
        except ValueError:  # the desk found no name in it after all
            return self._ask_for_a_name(view, token, now)
        if result.status is TakeStatus.NOT_OPEN:
            raise web.HTTPNotFound  # resolved meanwhile: as a spent link, like any other
        after = self.desk.view(token) or view
        if result.status is TakeStatus.TAKEN:
            log.info("ack: incident #%s taken through the web page", view.incident_id)
        return self._page(pages.ack_result_page(after, result, now, self.zone), 200)

    def _ask_for_a_name(self, view: IncidentView, token: str, now: float) -> web.Response:
        proof = self.proof.issue(token, now)
        page = pages.ack_page(view, proof, now, self.zone, problem="Type your name.")
        return self._page(page, 422)

    def _too_many(self) -> web.Response:
        response = self._page(pages.too_many_page(), 429)
        response.headers[hdrs.RETRY_AFTER] = "60"
        return response
