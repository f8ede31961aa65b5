"""The local SPOT simulator for tests, benchmarks and `alerter demo`; outside the product's path.

`server` serves scripted feeds over aiohttp, with fault injection; `bodies` builds the
response bodies (XML and JSON pages, error bodies) and needs no HTTP. The service
never imports this package; only `alerter demo` does, when it is run.
"""

from __future__ import annotations

from alerter.sim.bodies import error_to_json, error_to_xml, to_json, to_xml
from alerter.sim.server import (
    FAULT_KINDS,
    FIRST_ID,
    SimDevice,
    SimFeed,
    SimRequest,
    Simulator,
    check_fault,
)

__all__ = [
    "FAULT_KINDS",
    "FIRST_ID",
    "SimDevice",
    "SimFeed",
    "SimRequest",
    "Simulator",
    "check_fault",
    "error_to_json",
    "error_to_xml",
    "to_json",
    "to_xml",
]
