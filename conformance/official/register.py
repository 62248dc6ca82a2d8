"""Fill an official-suite config template for a deployment: register its static clients.

The suite's static-client variants need clients registered in advance with the suite's
redirect URI (``{suite}/test/a/{alias}/callback``), its post-logout URI and, for the
back-channel plan, its ``backchannel_logout_uri``. This registers them (with
``rp_category``, which PROTOCOL §2 requires) and prints the template with every
``${NAME}`` replaced:

    python -m conformance.official.register --issuer https://id.example.jp \\
        --suite https://localhost.emobix.co.uk:8443 --alias jp-digital-id \\
        conformance/official/oidcc-basic-static.json > basic.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

CLIENTS = {  # template prefix → token_endpoint_auth_method
    "CLIENT": "client_secret_basic",
    "CLIENT2": "client_secret_basic",
    "POST_CLIENT": "client_secret_post",
}


def substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, replacement in names.items():
            value = value.replace("${" + name + "}", replacement)
        return value
    if isinstance(value, list):
        return [substitute(v, names) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, names) for k, v in value.items()}
    return value


def register(issuer: str, base: str, method: str, category: str, token: str | None) -> dict[str, Any]:
    discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=20).json()
    body = {
        "client_name": f"OpenID conformance suite ({method})",
        "rp_category": category,
        "redirect_uris": [f"{base}/callback"],
        "post_logout_redirect_uris": [f"{base}/post_logout_redirect"],
        "backchannel_logout_uri": f"{base}/backchannel_logout",
        "backchannel_logout_session_required": True,
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": method,
        "id_token_signed_response_alg": "RS256",
    }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.post(discovery["registration_endpoint"], json=body, headers=headers, timeout=20)
    if answer.status_code != 201:
        raise SystemExit(f"registration failed: HTTP {answer.status_code} {answer.text}")
    return dict(answer.json())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.official.register", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("template", type=Path)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--category", default="municipal")
    parser.add_argument("--registration-token")
    args = parser.parse_args(argv)
    issuer = args.issuer.rstrip("/")
    base = f"{args.suite.rstrip('/')}/test/a/{args.alias}"
    names = {"ISSUER": issuer, "ALIAS": args.alias, "SUITE": args.suite.rstrip("/"),
             "REGISTRATION_TOKEN": args.registration_token or ""}
    template = json.loads(args.template.read_text(encoding="utf-8"))
    wanted = json.dumps(template)
    for prefix, method in CLIENTS.items():
        if "${" + prefix + "_ID}" in wanted:
            client = register(issuer, base, method, args.category, args.registration_token)
            names[f"{prefix}_ID"] = client["client_id"]
            names[f"{prefix}_SECRET"] = client.get("client_secret", "")
    json.dump(substitute(template, names), sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
