"""deploy/: nginx (Debian package) round-robin in front of two `idp serve` instances on
loopback ports, started and torn down here; a login runs through it."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from string import Template

import pytest
import requests

from tests.support import log_scan
from tests.support.lifecycle import card, login, rp
from tests.support.server import free_port, serve_idp

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "idp.conf.template"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def _wait_for_line(log: Path, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text} never logged in {log}"
        time.sleep(0.1)


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx): deploy/ example not run")
def test_login_through_nginx_round_robin(tmp_path, jpki_ca):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {"IDP_PROXY_HOPS": "1"}
    with serve_idp(tmp_path / "a", jpki_ca, issuer=issuer, env=env) as a, \
            serve_idp(tmp_path / "b", jpki_ca, issuer=issuer, env=env, share=a) as b:
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        for name in ("access.log", "error.log"):  # the front door's logs hold no token either
            log_scan.watch(prefix / name)
        conf = prefix / "nginx.conf"
        conf.write_text(Template(TEMPLATE.read_text()).safe_substitute(
            PREFIX=str(prefix), PORT=port, PORT_A=a.port, PORT_B=b.port))
        nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    requests.get(issuer + "/healthz", timeout=2)
                    break
                except requests.ConnectionError:
                    assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else ""
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.1)
            upstreams = {requests.get(issuer + "/readyz", timeout=10).headers["X-Upstream"] for _ in range(4)}
            assert upstreams == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
            assert requests.get(issuer + "/metrics", timeout=10).status_code == 404  # not at the front door
            front = a.__class__(**{**a.__dict__, "base_url": issuer, "port": port})
            client = rp(front)
            result = login(front, client, front.wallet().enroll(card(front)))
            assert client.userinfo(result.access_token)["sub"] == result.claims["sub"]
            logout = requests.get(client.logout_url(id_token_hint=result.id_token), timeout=10,
                                  allow_redirects=False)  # the ID token travels in the query
            assert logout.status_code < 500
            _wait_for_line(prefix / "access.log", "/logout")  # logged (after answering), without its query
        finally:
            nginx.terminate()
            nginx.wait(10)
