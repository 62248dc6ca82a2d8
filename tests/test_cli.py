"""The operator's command line (PROTOCOL §6): run with the deployment's IDP_* environment;
an error exits non-zero with one line, never a traceback."""

from __future__ import annotations

import json
import time

import pytest
import requests

from idp import audit
from tests.support.lifecycle import audit_events, card, db, run_cli


def test_audit_verify_on_the_live_server(idp, monkeypatch):
    idp.wallet().enroll(card(idp))
    audit.flush_anchor()  # as a second later: the server anchors in batches
    result = run_cli(idp, monkeypatch, "audit", "verify")
    assert result.code == 0 and result.out.startswith("audit chain intact:"), result
    assert "head anchor at entry" in result.out


def test_keys_rotate_is_audited_and_published(idp, monkeypatch):
    result = run_cli(idp, monkeypatch, "keys", "rotate", "--grace", "3600")
    assert result.code == 0, result
    kids = [e[1]["kids"] for e in audit_events(idp) if e[0] == "keys.rotated"][-1]
    assert kids and all(kid in result.out for kid in kids)
    jwks_uri = requests.get(idp.base_url + "/.well-known/openid-configuration", timeout=10).json()["jwks_uri"]
    deadline = time.monotonic() + 10  # the server rereads the key index every couple of seconds
    while True:
        published = {key["kid"] for key in requests.get(jwks_uri, timeout=10).json()["keys"]}
        if set(kids) <= published or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(kids) <= published


def test_policy_show_prints_json(idp, monkeypatch):
    result = run_cli(idp, monkeypatch, "policy", "show")
    assert result.code == 0
    assert "municipal" in result.out and isinstance(json.loads(result.out), dict)


def test_bad_settings_are_one_line(idp, monkeypatch):
    monkeypatch.setenv("IDP_ISSUER", "ftp://nowhere")
    from idp import cli

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["audit", "verify"])
    assert code != 0
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idp: ") and "Traceback" not in err.getvalue()


def test_unreadable_head_anchor_is_one_line(idp, monkeypatch, tmp_path):
    with db(idp) as session:  # an entry of its own, so the anchor exists whatever ran before
        audit.record(session, "test.marker")
    audit.flush_anchor()
    anchor = idp.settings.keys_dir / audit.ANCHOR_FILE
    saved = anchor.read_bytes()
    try:
        anchor.write_text("{not json")
        assert "audit head anchor" in run_cli(idp, monkeypatch, "audit", "verify").error_line
    finally:
        anchor.write_bytes(saved)
    assert run_cli(idp, monkeypatch, "audit", "verify").code == 0


@pytest.mark.parametrize("argv", [["ca"], ["ca", "revoke", "abc"], ["jpki"], ["audit"], ["nonsense"]])
def test_usage_errors_exit_non_zero(idp, monkeypatch, argv, capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(idp, monkeypatch, *argv)
    assert exited.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
