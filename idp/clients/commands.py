"""The operator's RP onboarding commands: ``idp clients …`` and ``idp authority …``.

``idp clients token`` mints an initial access token bound to a category (RFC 7591 §3);
``add`` registers a client directly (same validation as ``POST /register``); ``list`` and
``show`` read the registry; ``disable`` ends a client and its tokens at once.
``idp authority keygen`` / ``sign`` play the trust authority of RFC 7591 §2.3 for a small
deployment or a test: a real authority signs statements with its own tooling and publishes
its public keys, which the IdP reads from ``IDP_TRUST_AUTHORITY_JWKS``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from idp.policy import CATEGORIES


def _in_transaction(work: Any) -> str:
    from idp.cli import _in_transaction as run

    return run(work)


def _fail(message: str) -> Exception:
    from idp.cli import CommandError

    return CommandError(message)


def cmd_token(args: argparse.Namespace) -> None:
    from idp import audit
    from idp.clients import initial_access

    def work(session, services):  # type: ignore[no-untyped-def]
        token = initial_access.mint(session, args.category, expires_in=args.expires_in or None,
                                    uses=args.uses or None)
        audit.record(session, "client.token_minted", category=args.category,
                     expires_in=args.expires_in or None, uses=args.uses or None)
        return token

    print(_in_transaction(work))


def cmd_add(args: argparse.Namespace) -> None:
    from idp import audit
    from idp.clients.registry import client_information, create_client, validate_metadata
    from idp.errors import ProtocolError

    body: dict[str, Any] = {"rp_category": args.category, "client_name": args.name,
                            "redirect_uris": args.redirect_uri}
    if args.auth_method:
        body["token_endpoint_auth_method"] = args.auth_method
    if args.sector_identifier_uri:
        body["sector_identifier_uri"] = args.sector_identifier_uri
    if args.post_logout_redirect_uri:
        body["post_logout_redirect_uris"] = args.post_logout_redirect_uri
    if args.refresh_tokens:
        body["grant_types"] = ["authorization_code", "refresh_token"]
    if args.jwks:
        try:
            body["jwks"] = json.loads(Path(args.jwks).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"{args.jwks}: not a readable JWK Set ({exc})") from None

    def work(session, services):  # type: ignore[no-untyped-def]
        settings = services.settings
        try:
            meta = validate_metadata(body, policy=services.policy, allow_http_loopback=settings.allow_http_loopback)
        except ProtocolError as exc:
            raise _fail(f"{exc.error}: {exc.description}") from None
        row, issued = create_client(session, meta)
        audit.record(session, "client.registered", client=row.client_id, category=row.rp_category, via="operator")
        info = client_information(row, settings.url(f"/register/{row.client_id}"))
        info.update(issued)
        return json.dumps(info, indent=2, ensure_ascii=False)

    print(_in_transaction(work))


def cmd_list(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from idp.clients.registry import client_status
    from idp.storage.models import Client

    def work(session, services):  # type: ignore[no-untyped-def]
        rows = session.scalars(select(Client).order_by(Client.created_at, Client.client_id)).all()
        lines = ["client_id\tcategory\tstatus\tregistered\tname"]
        for row in rows:
            status = client_status(row)
            if status == "deleted" and not args.all:
                continue
            registered = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.client_id_issued_at))
            name = str(row.client_metadata.get("client_name", "")).replace("\t", " ")
            lines.append(f"{row.client_id}\t{row.rp_category}\t{status}\t{registered}\t{name}")
        return "\n".join(lines)

    print(_in_transaction(work))


def _find(session: Any, client_id: str) -> Any:
    from idp.storage.models import Client

    row = session.get(Client, client_id) if len(client_id) <= 64 else None
    if row is None:
        raise _fail(f"no client {client_id!r}")
    return row


def cmd_show(args: argparse.Namespace) -> None:
    from idp.clients.registry import client_information, client_status

    def work(session, services):  # type: ignore[no-untyped-def]
        row = _find(session, args.client_id)
        info = client_information(row, services.settings.url(f"/register/{row.client_id}"))
        info["status"] = client_status(row)
        return json.dumps(info, indent=2, ensure_ascii=False)

    print(_in_transaction(work))


def cmd_disable(args: argparse.Namespace) -> None:
    from idp import audit
    from idp.clients.registry import client_status, disable_client

    def work(session, services):  # type: ignore[no-untyped-def]
        row = _find(session, args.client_id)
        if client_status(row) == "deleted":
            raise _fail(f"client {row.client_id} was deleted by its owner")
        revoked = disable_client(session, row)
        audit.record(session, "client.disabled", client=row.client_id, tokens_revoked=revoked)
        return f"disabled {row.client_id}; {revoked} tokens revoked"

    print(_in_transaction(work))


def cmd_authority_keygen(args: argparse.Namespace) -> None:
    """A new authority signing key (EC P-256): the private JWK to ``--key`` (mode 0600), the
    public JWK Set (what ``IDP_TRUST_AUTHORITY_JWKS`` names) to stdout or ``--jwks``."""
    from joserfc.jwk import ECKey

    from idp.files import write_atomically

    path = Path(args.key)
    if path.exists():
        raise _fail(f"{path} exists: refusing to overwrite an authority key")
    key = ECKey.generate_key("P-256", parameters={"use": "sig", "alg": "ES256"}, auto_kid=True)
    write_atomically(path, json.dumps(key.as_dict(private=True)).encode())
    public = json.dumps({"keys": [key.as_dict(private=False)]}, indent=2)
    if args.jwks:
        write_atomically(Path(args.jwks), public.encode(), 0o644)
    print(public)


def cmd_authority_sign(args: argparse.Namespace) -> None:
    from idp.clients.software_statement import sign

    try:
        private_jwk = json.loads(Path(args.key).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(f"{args.key}: not a readable private JWK ({exc})") from None
    now = int(time.time())
    claims: dict[str, Any] = {"iss": args.issuer, "iat": now, "rp_category": args.category,
                              "client_name": args.name, "redirect_uris": args.redirect_uri}
    if args.expires_in:
        claims["exp"] = now + args.expires_in
    for key, value in (("software_id", args.software_id), ("sector_identifier_uri", args.sector_identifier_uri),
                       ("aud", args.audience)):
        if value:
            claims[key] = value
    try:
        print(sign(claims, private_jwk))
    except Exception as exc:  # joserfc raises several types for unusable key material
        raise _fail(f"{args.key}: cannot sign with this key ({exc})") from None


def add_parsers(sub: Any) -> None:
    """Attach ``clients`` and ``authority`` to the ``idp`` command."""
    clients = sub.add_parser("clients", help="RP onboarding: tokens, registration, disabling").add_subparsers(
        dest="clients_command", required=True)
    token = clients.add_parser("token", help="mint an initial access token bound to a category (RFC 7591 §3)")
    token.add_argument("--category", required=True, choices=CATEGORIES)
    token.add_argument("--expires-in", type=int, default=7 * 24 * 3600,
                       help="seconds until it expires (default 7 days; 0: never)")
    token.add_argument("--uses", type=int, default=1, help="registrations it admits (default 1; 0: unlimited)")
    token.set_defaults(func=cmd_token)

    add = clients.add_parser("add", help="register a client directly; prints its registration JSON")
    add.add_argument("--category", required=True, choices=CATEGORIES)
    add.add_argument("--name", required=True)
    add.add_argument("--redirect-uri", required=True, action="append")
    add.add_argument("--auth-method", choices=("client_secret_basic", "client_secret_post", "private_key_jwt", "none"))
    add.add_argument("--jwks", help="file with the client's public JWK Set (private_key_jwt)")
    add.add_argument("--sector-identifier-uri")
    add.add_argument("--post-logout-redirect-uri", action="append")
    add.add_argument("--refresh-tokens", action="store_true", help="also register the refresh_token grant")
    add.set_defaults(func=cmd_add)

    listing = clients.add_parser("list", help="registered clients (tab-separated)")
    listing.add_argument("--all", action="store_true", help="include clients deleted through RFC 7592")
    listing.set_defaults(func=cmd_list)
    show = clients.add_parser("show", help="one client's registration and status (JSON)")
    show.add_argument("client_id")
    show.set_defaults(func=cmd_show)
    disable = clients.add_parser("disable", help="disable a client; its tokens stop working at once")
    disable.add_argument("client_id")
    disable.set_defaults(func=cmd_disable)

    authority = sub.add_parser("authority", help="a software-statement authority (RFC 7591 §2.3)").add_subparsers(
        dest="authority_command", required=True)
    keygen = authority.add_parser("keygen", help="create an authority signing key; prints its public JWK Set")
    keygen.add_argument("--key", required=True, help="where to write the private JWK (mode 0600)")
    keygen.add_argument("--jwks", help="also write the public JWK Set here")
    keygen.set_defaults(func=cmd_authority_keygen)
    sign = authority.add_parser("sign", help="sign a software statement; prints the JWT")
    sign.add_argument("--category", required=True, choices=CATEGORIES)
    sign.add_argument("--name", required=True)
    sign.add_argument("--redirect-uri", required=True, action="append")
    sign.add_argument("--key", required=True, help="the authority's private JWK file")
    sign.add_argument("--issuer", default="urn:x-jp-digital-id:trust-authority",
                      help="the authority's identifier (iss)")
    sign.add_argument("--software-id")
    sign.add_argument("--sector-identifier-uri")
    sign.add_argument("--audience", help="the IdP issuer this statement is for (aud); default: any")
    sign.add_argument("--expires-in", type=int, default=0, help="seconds until it expires (default: never)")
    sign.set_defaults(func=cmd_authority_sign)
