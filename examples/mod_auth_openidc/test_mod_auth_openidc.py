"""Apache mod_auth_openidc registers itself dynamically with its stock registration request,
carrying only the category-bound initial access token from its per-provider configuration
file, and completes a login through the IdP.

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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
import requests

from examples.conftest import mint_token
from tests.conftest import RunningIdP
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


@pytest.fixture
def apache(idp: RunningIdP) -> Iterator[str]:
    if not (os.access(APACHE, os.X_OK) and MODULE.exists()):
        pytest.skip("apache2 and libapache2-mod-auth-openidc are not installed (apt-get install apache2 "
                    "libapache2-mod-auth-openidc; .ci/run tries): the mod_auth_openidc example was not run")
    # not pytest's tmp_path: its parents are private to us, and the workers may run as www-data
    folder = Path(tempfile.mkdtemp(prefix="mod-auth-openidc-"))
    run, metadata = folder / "run", folder / "metadata"
    (run / "htdocs" / "protected").mkdir(parents=True)
    (run / "htdocs" / "protected" / "index.html").write_text("<p>signed in</p>\n")
    metadata.mkdir()
    # The only configuration the RP gets besides its own settings: the initial access token.
    conf = metadata / f"{_metadata_name(idp.settings.issuer)}.conf"
    conf.write_text(json.dumps({"registration_token": mint_token(idp, "municipal")}))
    user = "www-data" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    if os.geteuid() == 0:  # the workers drop to www-data and write the module's metadata
        folder.chmod(0o755)
        shutil.chown(metadata, user, group)
        shutil.chown(conf, user, group)
    port = _free_port()
    env = {**os.environ, "RP_PORT": str(port), "RP_RUN_DIR": str(run), "RP_METADATA_DIR": str(metadata),
           "RP_PASSPHRASE": secrets.token_hex(16), "RP_USER": user, "RP_GROUP": group}
    process = subprocess.Popen([APACHE, "-f", str(HERE / "httpd.conf"), "-DFOREGROUND"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
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


def test_mod_auth_openidc_registers_dynamically_and_logs_in(idp: RunningIdP, person, apache: str) -> None:
    wallet, device = person
    browser = requests.Session()
    # The module's stock provider-discovery page: the person enters the IdP's issuer.
    page = browser.get(f"{apache}/protected/", timeout=10)
    form = next(f for f in parse_page(page.text).forms if f.action.endswith("/protected/redirect_uri"))
    query = dict(form.submission(iss=idp.settings.issuer))
    start = browser.get(f"{form.action}?{urlencode(query)}", allow_redirects=False, timeout=30)
    assert start.status_code == 302, start.text
    authorize = start.headers["Location"]
    assert authorize.startswith(idp.base_url + "/authorize?")

    callback = browser_login(browser, idp.base_url, authorize, wallet.with_session(browser), device)
    assert urlsplit(callback).path == "/protected/redirect_uri"
    landed = browser.get(callback, timeout=30)
    assert landed.status_code == 200 and "signed in" in landed.text, landed.text

    info = browser.get(f"{apache}/protected/redirect_uri?info=json", timeout=10).json()
    assert info["id_token"]["iss"] == idp.settings.issuer and info["id_token"]["sub"] == info["userinfo"]["sub"]
    assert info["userinfo"]["name"] == "前橋　太郎"

    # What the module asked for, and what it was registered with: the stock request
    # (six response types, the implicit grant), narrowed to the code flow, category from the token.
    from idp.storage.models import Client

    with db(idp) as session:
        row = session.get(Client, info["id_token"]["aud"] if isinstance(info["id_token"]["aud"], str)
                          else info["id_token"]["aud"][0])
        assert row is not None and row.rp_category == "municipal"
        assert row.client_metadata["response_types"] == ["code"]
        assert "implicit" not in row.client_metadata["grant_types"]
