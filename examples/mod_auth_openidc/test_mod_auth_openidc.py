"""Apache mod_auth_openidc registers itself dynamically with its stock registration request,
carrying only a category-bound initial access token, or a trust authority's software
statement, from its per-provider configuration file, and completes a login through the IdP.

Needs Debian's ``apache2`` and ``libapache2-mod-auth-openidc`` (``.ci/run`` installs them
best effort); without them the test is skipped, saying so.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
import requests
from joserfc.jwk import ECKey

from examples.conftest import mint_token
from idp.clients.software_statement import sign
from tests.conftest import RunningIdP, start_idp
from tests.support.lifecycle import db
from tests.support.rp import browser_login, parse_page

HERE = Path(__file__).resolve().parent
APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULE = Path("/usr/lib/apache2/modules/mod_auth_openidc.so")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metadata_name(issuer: str) -> str:
    """mod_auth_openidc's file name for an issuer: scheme and trailing slash stripped, URL-encoded."""
    return quote(issuer.split("://", 1)[1].rstrip("/"), safe="")


def _installed() -> None:
    if not (os.access(APACHE, os.X_OK) and MODULE.exists()):
        pytest.skip("apache2 and libapache2-mod-auth-openidc are not installed (apt-get install apache2 "
                    "libapache2-mod-auth-openidc; .ci/run tries): the mod_auth_openidc example was not run")


@contextmanager
def running_apache(issuer: str, provider_conf: Callable[[str], dict[str, Any]]) -> Iterator[str]:
    """Apache with httpd.conf on a free loopback port. ``provider_conf(redirect_uri)`` is the
    only per-provider configuration the module gets: the initial access token or statement."""
    # not pytest's tmp_path: its parents are private to us, and the workers may run as www-data
    folder = Path(tempfile.mkdtemp(prefix="mod-auth-openidc-"))
    run, metadata = folder / "run", folder / "metadata"
    (run / "htdocs" / "protected").mkdir(parents=True)
    (run / "htdocs" / "protected" / "index.html").write_text("<p>signed in</p>\n")
    metadata.mkdir()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    conf = metadata / f"{_metadata_name(issuer)}.conf"
    conf.write_text(json.dumps(provider_conf(f"{base}/protected/redirect_uri")))
    user = "www-data" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    if os.geteuid() == 0:  # the workers drop to www-data and write the module's metadata
        folder.chmod(0o755)
        shutil.chown(metadata, user, group)
        shutil.chown(conf, user, group)
    env = {**os.environ, "RP_PORT": str(port), "RP_RUN_DIR": str(run), "RP_METADATA_DIR": str(metadata),
           "RP_PASSPHRASE": secrets.token_hex(16), "RP_USER": user, "RP_GROUP": group}
    process = subprocess.Popen([APACHE, "-f", str(HERE / "httpd.conf"), "-DFOREGROUND"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(base + "/", timeout=1)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    log = (run / "error.log").read_text() if (run / "error.log").exists() else ""
                    pytest.fail(f"apache2 did not start: {output}{log}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
        shutil.rmtree(folder, ignore_errors=True)


def login_through_apache(idp: RunningIdP, person: Any, apache: str) -> dict[str, Any]:
    """The person picks the IdP on the module's stock discovery page and signs in; returns
    what the module received (its info hook)."""
    wallet, device = person
    browser = requests.Session()
    page = browser.get(f"{apache}/protected/", timeout=10)
    form = next(f for f in parse_page(page.text).forms if f.action.endswith("/protected/redirect_uri"))
    query = dict(form.submission(iss=idp.settings.issuer))
    start = browser.get(f"{form.action}?{urlencode(query)}", allow_redirects=False, timeout=30)
    assert start.status_code == 302, start.text  # registered, then sent to the IdP
    authorize = start.headers["Location"]
    assert authorize.startswith(idp.base_url + "/authorize?")
    callback = browser_login(browser, idp.base_url, authorize, wallet.with_session(browser), device)
    assert urlsplit(callback).path == "/protected/redirect_uri"
    landed = browser.get(callback, timeout=30)
    assert landed.status_code == 200 and "signed in" in landed.text, landed.text
    info = browser.get(f"{apache}/protected/redirect_uri?info=json", timeout=10).json()
    assert info["id_token"]["iss"] == idp.settings.issuer and info["id_token"]["sub"] == info["userinfo"]["sub"]
    return info


def registered(idp: RunningIdP, info: dict[str, Any]) -> Any:
    from idp.storage.models import Client

    audience = info["id_token"]["aud"]
    with db(idp) as session:
        row = session.get(Client, audience if isinstance(audience, str) else audience[0])
        session.expunge(row)
        return row


def test_mod_auth_openidc_registers_dynamically_and_logs_in(idp: RunningIdP, person) -> None:
    """Its stock registration request (six response types, the implicit grant, no category)
    plus the token from its .conf: narrowed to the code flow, category from the token."""
    _installed()
    token = mint_token(idp, "municipal")
    with running_apache(idp.settings.issuer, lambda redirect_uri: {"registration_token": token}) as apache:
        info = login_through_apache(idp, person, apache)
    assert info["userinfo"]["name"] == "前橋　太郎"
    row = registered(idp, info)
    assert row.rp_category == "municipal"
    assert row.client_metadata["response_types"] == ["code"]
    assert "implicit" not in row.client_metadata["grant_types"]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> tuple[ECKey, Path]:
    folder = tmp_path_factory.mktemp("authority")
    key = ECKey.generate_key("P-256", auto_kid=True)
    (folder / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    return key, folder / "jwks.json"


@pytest.fixture(scope="module")
def federated_idp(tmp_path_factory: pytest.TempPathFactory, jpki_ca: Any,
                  authority: tuple[ECKey, Path]) -> Iterator[RunningIdP]:
    """An IdP that trusts a software-statement authority."""
    _installed()
    yield from start_idp(tmp_path_factory.mktemp("federated"), jpki_ca,
                         env={"IDP_TRUST_AUTHORITY_JWKS": str(authority[1])})


def test_mod_auth_openidc_registers_with_a_software_statement(federated_idp: RunningIdP, authority) -> None:
    """The statement goes in through the module's own ``registration_endpoint_json``; the
    category (transport) comes from the authority: the module names none."""
    key, _ = authority
    wallet = federated_idp.wallet()
    person = (wallet, wallet.enroll(federated_idp.card()))

    def statement(redirect_uri: str) -> dict[str, Any]:
        signed = sign({"iss": "https://authority.example", "iat": int(time.time()), "rp_category": "transport",
                       "client_name": "Railway (Apache)", "redirect_uris": [redirect_uri]}, key.as_dict(private=True))
        return {"registration_endpoint_json": json.dumps({"software_statement": signed})}

    with running_apache(federated_idp.settings.issuer, statement) as apache:
        info = login_through_apache(federated_idp, person, apache)
    assert "name" not in info["userinfo"]  # transport RPs never receive a name
    row = registered(federated_idp, info)
    assert row.rp_category == "transport" and row.client_metadata["client_name"] == "Railway (Apache)"
