"""JSON logs (README "Operations"): one object per line with request_id and instance, the
X-Request-Id echoed (kept when a plain token), and a full flow's logs hold no token, secret,
JPKI serial or personal attribute."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from idp.ops.logs import JsonFormatter
from tests.support.lifecycle import card, login, rp
from tests.support.server import serve_idp

NAME, ADDRESS, BIRTH = "記録　花子", "静岡県静岡市記録町三丁目四番五号", "419880808"


def test_request_id_is_kept_when_plain_and_made_otherwise(idp):
    url = idp.base_url + "/healthz"
    kept = requests.get(url, headers={"X-Request-Id": "lb-7f3a.42"}, timeout=10)
    assert kept.headers["X-Request-Id"] == "lb-7f3a.42"
    for offered in ("two words", "x" * 200, "<script>", ""):
        made = requests.get(url, headers={"X-Request-Id": offered}, timeout=10).headers["X-Request-Id"]
        assert made != offered and len(made) == 32 and made.isalnum()
    assert requests.get(url, timeout=10).headers["X-Request-Id"] != made


def _forbidden(person, result, client) -> list[str]:
    values = [result.access_token, result.id_token, result.token.get("refresh_token"), client.client_secret,
              NAME, NAME.split("\u3000")[0], ADDRESS, BIRTH, "1988-08-08",
              format(person.serial_number, "x"), str(person.serial_number)]
    return [v for v in values if v]


def test_a_full_flow_logs_json_lines_without_tokens_or_personal_values(idp, caplog):
    caplog.set_level(logging.INFO)
    person = card(idp, name=NAME, address=ADDRESS, date_of_birth=BIRTH)
    client = rp(idp)
    phone = idp.wallet().enroll(person)
    result = login(idp, client, phone)
    client.userinfo(result.access_token)
    formatter = JsonFormatter("test-instance")
    lines = [formatter.format(record) for record in caplog.records]
    requests_logged = [json.loads(line) for line in lines if '"logger": "idp.request"' in line]
    assert len(requests_logged) >= 8  # authorize, login, options, assertion, consent, token, userinfo…
    for entry in requests_logged:
        assert entry["instance"] == "test-instance" and len(entry["request_id"]) == 32
        assert {"method", "path", "status", "duration_ms"} <= entry.keys()
    text = "\n".join(lines)
    for value in _forbidden(person, result, client):
        assert value not in text, value


def test_served_instance_logs_only_json_lines_without_secrets(tmp_path, jpki_ca):
    with serve_idp(tmp_path, jpki_ca, workers=1, env={"IDP_INSTANCE_ID": "node-a"}) as server:
        person = card(server, name=NAME, address=ADDRESS, date_of_birth=BIRTH)
        client = rp(server)
        phone = server.wallet().enroll(person)
        result = login(server, client, phone)
        client.userinfo(result.access_token)
        echoed = requests.get(server.url("/healthz"), headers={"X-Request-Id": "trace-1"}, timeout=10)
        assert echoed.headers["X-Request-Id"] == "trace-1"
        server.stop()
        log = server.log()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    assert any(e.get("request_id") == "trace-1" and e.get("path") == "/healthz" for e in entries)
    assert all(e["instance"] == "node-a" for e in entries if e.get("logger") == "idp.request")
    for value in _forbidden(person, result, client):
        assert value not in log, value
