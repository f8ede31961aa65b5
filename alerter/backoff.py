"""Backoff delays from tenacity's wait strategies, for retries that a scheduler or the
outbox carries out later (durably) instead of sleeping in place."""

from __future__ import annotations

from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_base, wait_exponential_jitter


def delay_for(wait: wait_base, attempt: int) -> float:
    """Seconds to wait before try number `attempt + 1`, after `attempt` failures."""
    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(1, attempt)
    return float(wait(state))


def exponential(first: float, cap: float, jitter: float = 0.1) -> wait_base:
    """`first`, doubling per failure, capped at `cap`, with up to `jitter` x `first` added."""
    return wait_exponential_jitter(multiplier=first, max=cap, jitter=first * jitter)
