"""Outbound fetch failures are counted by a fixed reason (never the URL or the detail)."""

from __future__ import annotations

import pytest

from idp.clients.fetch import FetchError, fetch
from idp.ops.metrics import FETCH_FAILURES


def count(reason: str) -> float:
    return FETCH_FAILURES.labels(reason)._value.get()


@pytest.mark.parametrize("url, reason", [("http://127.0.0.1:9/x", "refused_address"),
                                         ("https://10.0.0.1/jwks", "refused_address")])
def test_a_refused_fetch_moves_its_reason_by_one(url, reason):
    before = count(reason)
    with pytest.raises(FetchError):
        fetch(url, allow_http_loopback=False)
    assert count(reason) - before == 1
