"""The service's own small web server: `/healthz`, `/metrics`, `/status` (`server`)."""

from __future__ import annotations

from alerter.web.server import WebServer, parse_listen

__all__ = ["WebServer", "parse_listen"]
