"""The real-server harness itself: a multi-worker ``idp serve`` starts, answers, shares a
deployment with a second instance, and stops cleanly (tests/support/server.py)."""

from __future__ import annotations

import requests

from tests.support.server import ServedIdP, parallel, serve_idp


def test_served_idp_answers_in_parallel_from_several_workers(served_idp: ServedIdP) -> None:
    responses = parallel(lambda i: requests.get(served_idp.url("/.well-known/openid-configuration"), timeout=30))
    assert [r.status_code for r in responses] == [200] * 20
    assert responses[0].json()["issuer"] == served_idp.base_url
    assert "Booting worker" in served_idp.log()


def test_two_instances_share_one_deployment(tmp_path, jpki_ca) -> None:
    with serve_idp(tmp_path / "one", jpki_ca, workers=1) as one:
        with serve_idp(tmp_path / "two", jpki_ca, workers=1, share=one) as two:
            assert two.database_url == one.database_url and two.keys_dir == one.keys_dir
            discovery = [requests.get(s.url("/.well-known/openid-configuration"), timeout=10).json()
                         for s in (one, two)]
            keys = [requests.get(d["jwks_uri"], timeout=10).json() for d in discovery]
            assert keys[0] == keys[1] and keys[0]["keys"]
        assert two.stop() == 0
    assert one.process.returncode == 0
    assert "Shutting down: Master" in one.log()
