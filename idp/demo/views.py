"""Routes of the development demo: overview, demo wallet (enrolment), demo RPs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, abort, jsonify, make_response, redirect, render_template, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from idp.context import services
from idp.demo import cards, rps
from idp.errors import InvalidRequest, NotFound
from idp.oidc import claims as claims_mod
from idp.oidc.session import current_db
from idp.storage.models import Client, Disclosure, Enrollment, utcnow
from idp.web import browser
from idp.web.base64 import json_body, string_field
from idp.web.i18n import current_locale

bp = Blueprint("demo", __name__, url_prefix="/demo")
STATE_MAX_AGE = 1800


@bp.before_request
def _development_only() -> None:
    if not services().settings.development:
        abort(404)


def _rp(category: str) -> rps.DemoRP:
    rp = rps.DEMO_RPS.get(category)
    if rp is None:
        abort(404)
    return rp


# ---- overview ----

@bp.get("/")
def index() -> ResponseReturnValue:
    settings = services().settings
    session = browser.current_session()
    seen = _what_each_rp_sees(session.account_id) if session else []
    return render_template("demo/index.html", rps=list(rps.DEMO_RPS.values()), settings=settings,
                           rp_url=lambda rp: rps.rp_url(settings, rp), origin=lambda rp: rps.rp_origin(settings, rp),
                           session=session, seen=seen, has_card_ca=cards.load_test_ca(settings) is not None)


def _what_each_rp_sees(account_id: str) -> list[dict[str, Any]]:
    """For the signed-in person: each registered demo RP's pairwise sub and latest disclosure."""
    path = services().settings.keys_dir / rps.REGISTRY_FILE
    registered = rps._read(path)
    db = current_db()
    rows = []
    for category, rp in rps.DEMO_RPS.items():
        record = registered.get(category)
        client = db.get(Client, record["client_id"]) if isinstance(record, dict) and record.get("client_id") else None
        if client is None:
            continue
        last = db.scalars(select(Disclosure).where(Disclosure.account_id == account_id,
                                                   Disclosure.client_id == client.client_id)
                          .order_by(Disclosure.at.desc(), Disclosure.id.desc()).limit(1)).first()
        rows.append({"rp": rp, "sector": client.sector_identifier,
                     "sub": claims_mod.subject(account_id, client.sector_identifier, services().pairwise_salt),
                     "claims": list(last.claims) if last else [], "at": last.at if last else None})
    return rows


# ---- demo wallet ----

@bp.get("/wallet")
def wallet() -> ResponseReturnValue:
    settings = services().settings
    return render_template("demo/wallet.html", personas=list(cards.PERSONAS.values()),
                           has_card_ca=cards.load_test_ca(settings) is not None)


@bp.post("/card/sign")
def card_sign() -> ResponseReturnValue:
    """The TEST card signs the binding string for an enrolment begun on this server."""
    body = json_body()
    persona = cards.PERSONAS.get(string_field(body, "persona", max_length=32))
    if persona is None:
        raise InvalidRequest("unknown test persona")
    enrollment = current_db().get(Enrollment, string_field(body, "enrollment_id", max_length=64))
    if enrollment is None or enrollment.state != "begun" or enrollment.expires_at <= utcnow():
        raise NotFound("no enrolment waiting for a card signature; begin again", error="invalid_request")
    try:
        spki = cards.credential_spki(body.get("credential"))
        card = cards.card_for(services().settings, persona)
    except cards.DemoCardError as exc:
        raise InvalidRequest(str(exc)) from None
    return jsonify({"jpki": cards.sign_enrollment(card, enrollment.challenge, spki),
                    "test_card": True, "persona": persona.key})


# ---- demo relying parties ----

def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(services().secret_key, salt="idp.demo.rp")


def _cookie(rp: rps.DemoRP) -> str:
    return f"demo_rp_{rp.category}"


def _rp_page(template: str, rp: rps.DemoRP, status: int = 200, **context: Any) -> ResponseReturnValue:
    settings = services().settings
    return render_template(template, rp=rp, demo_home=settings.url("/demo/"), rp_home=rps.rp_url(settings, rp),
                           origin=rps.rp_origin(settings, rp), sector=rps.sector_of(settings, rp),
                           **context), status


@bp.get("/rp/<category>/")
def rp_home(category: str) -> ResponseReturnValue:
    return _rp_page("demo/rp_home.html", _rp(category))


@bp.get("/rp/<category>/policy")
def rp_policy(category: str) -> ResponseReturnValue:
    return _rp_page("demo/rp_document.html", _rp(category), document="policy")


@bp.get("/rp/<category>/terms")
def rp_terms(category: str) -> ResponseReturnValue:
    return _rp_page("demo/rp_document.html", _rp(category), document="terms")


@bp.route("/rp/<category>/login", methods=["GET", "POST"])
def rp_login(category: str) -> ResponseReturnValue:
    rp = _rp(category)
    prompt = "login" if request.values.get("fresh") == "1" else None
    try:
        url, remembered = rps.start(services(), rp, current_locale(), prompt=prompt)
    except rps.DemoRPError as exc:
        return _rp_page("demo/rp_result.html", rp, 502, error=exc)
    response = make_response(redirect(url, code=303))
    response.set_cookie(_cookie(rp), _serializer().dumps(remembered), max_age=STATE_MAX_AGE, httponly=True,
                        samesite="Lax", path=f"/demo/rp/{rp.category}/")
    return response


@bp.get("/rp/<category>/callback")
def rp_callback(category: str) -> ResponseReturnValue:
    rp = _rp(category)
    try:
        remembered = _serializer().loads(request.cookies.get(_cookie(rp), ""), max_age=STATE_MAX_AGE)
    except BadSignature:
        remembered = {}
    args = request.args.to_dict()
    try:
        result = rps.finish(services(), rp, remembered, args)
    except rps.DemoRPError as exc:
        declined = exc.step == "authorization" and args.get("error") == "access_denied"
        html, status = _rp_page("demo/rp_result.html", rp, 200 if declined else 400, error=exc, declined=declined)
        response = make_response(html, status)
    else:
        auth_time = datetime.fromtimestamp(int(result.id_token_claims.get("auth_time", 0)), timezone.utc)
        html, status = _rp_page("demo/rp_result.html", rp, result=result, auth_time=auth_time,
                                id_token_json=json.dumps(result.id_token_claims, ensure_ascii=False, indent=2),
                                header_json=json.dumps(result.id_token_header, indent=2),
                                userinfo_json=json.dumps(result.userinfo, ensure_ascii=False, indent=2))
        response = make_response(html, status)
    response.delete_cookie(_cookie(rp), path=f"/demo/rp/{rp.category}/", httponly=True, samesite="Lax")
    response.headers["Cache-Control"] = "no-store"
    return response
