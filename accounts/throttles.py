from chatproject.throttling import ScopedRateThrottle


class ClientIpThrottle(ScopedRateThrottle):
    """Counts per client IP for the view's `throttle_scope`, even for authenticated callers."""

    def get_cache_key(self, request, view) -> str:  # type: ignore[override]
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
