"""Rate limits (the `limits` library, moving window) and the client address they count by.

The address is the TCP peer, unless that peer is one of DERMALENS_TRUSTED_PROXIES: then it is
the right-most X-Forwarded-For entry that is not itself a trusted proxy. Without that setting
the header is ignored, since any client can write it. The default storage is per process:
with several workers, give a shared one (DERMALENS_RATE_LIMIT_STORAGE=redis://...).
"""

from __future__ import annotations

import ipaddress
import math
import time

import limits
from fastapi import HTTPException, Request, status
from limits.strategies import MovingWindowRateLimiter


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(request: Request, trusted: list[str]) -> str:
    """The client's address, believing X-Forwarded-For only from trusted proxies."""
    peer = request.client.host if request.client else ""
    networks = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def is_trusted(text: str) -> bool:
        address = _address(text)
        return address is not None and any(address in n for n in networks)

    if not networks or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop if _address(hop) is not None else peer
    return hops[0] if hops else peer


class RateLimits:
    """Named limits per key (the client address); `check` raises 429 past one."""

    def __init__(self, storage_uri: str = "memory://"):
        self.limiter = MovingWindowRateLimiter(limits.storage.storage_from_string(storage_uri))

    def check(self, rule: str, scope: str, key: str, detail: str) -> None:
        """Count one hit; 429 with Retry-After and `detail` (with {seconds}) when over. An empty
        rule is no limit."""
        for item in limits.parse_many(rule) if rule else []:
            if not self.limiter.hit(item, scope, key):
                reset, _ = self.limiter.get_window_stats(item, scope, key)
                seconds = max(1, math.ceil(reset - time.time()))
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    detail.format(rule=rule, seconds=seconds),
                    headers={"Retry-After": str(seconds)},
                )
