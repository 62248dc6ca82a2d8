"""Back-channel logout through the bounded queue (idp/oidc/backchannel.py, BCL 1.0 §2.5):
a hanging RP endpoint delays no other RP, and a failed delivery is retried."""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

import requests

from tests.conftest import RunningIdP
from tests.support.listeners import TricklingServer
from tests.support.rp import RelyingParty, browser_login
from tests.support.rp_host import RpHost

DEADLINE = 3.0


def _register(idp: RunningIdP, host: RpHost, backchannel_logout_uri: str) -> RelyingParty:
    return RelyingParty.register(idp.base_url, redirect_uri=host.url(f"/cb/{secrets.token_hex(3)}"),
                                 rp_category="municipal", backchannel_logout_uri=backchannel_logout_uri)


def test_a_hanging_endpoint_delays_no_other_rp_and_is_retried(idp: RunningIdP, host: RpHost, person: Any) -> None:
    wallet, device = person
    paths = [f"/bcl/{secrets.token_hex(4)}" for _ in range(5)]
    for path in paths:
        host.put(path, b"", content_type="text/plain", method="POST")
    with TricklingServer(interval=30.0) as hanging:
        rps = [_register(idp, host, hanging.url("/hang"))] + [_register(idp, host, host.url(p)) for p in paths]
        browser = requests.Session()
        first = rps[0].finish(browser_login(browser, idp.base_url, rps[0].start(browser), wallet, device))
        for rp in rps[1:]:
            rp.finish(browser_login(browser, idp.base_url, rp.start(browser), wallet, device))
        logout = rps[0].provider["end_session_endpoint"] + "?" + urlencode({"id_token_hint": first.id_token})
        started = time.monotonic()
        assert browser.get(logout, timeout=10).status_code == 200
        for path in paths:
            assert host.wait_for(path, timeout=DEADLINE + 1), f"{path} was not notified"
        elapsed = time.monotonic() - started
        assert elapsed < DEADLINE, f"the other RPs waited {elapsed:.1f} s behind the hanging one"
        deadline = time.monotonic() + DEADLINE + 2.0 + DEADLINE
        while hanging.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hanging.connections >= 2, "the failed delivery was not retried"

