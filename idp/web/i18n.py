"""Languages: Japanese by default, English available (Flask-Babel catalogues).

Choice order (PROTOCOL §6): ``ui_locales`` of the authorization request (kept with its
transaction), then an explicit switch (``?lang=`` remembered in a cookie), then the
browser's ``Accept-Language``, then Japanese.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from flask_babel import Babel, get_locale, gettext, lazy_gettext

LOCALES = ("ja", "en")
LANG_COOKIE = "idp_lang"

CLAIM_LABELS = {
    "name": lazy_gettext("Name"),
    "birthdate": lazy_gettext("Date of birth"),
    "gender": lazy_gettext("Gender"),
    "address": lazy_gettext("Address"),
    "age_over_18": lazy_gettext("Aged 18 or over"),
    "age_over_65": lazy_gettext("Aged 65 or over"),
    "verified_claims": lazy_gettext("Verified identity (for identity checks by banks)"),
}
CATEGORY_LABELS = {
    "municipal": lazy_gettext("Municipal service"),
    "medical": lazy_gettext("Medical institution"),
    "financial": lazy_gettext("Financial institution"),
    "transport": lazy_gettext("Transport operator"),
}


def _from_ui_locales(value: str | None) -> str | None:
    for tag in (value or "").split():
        base = tag.split("-")[0].lower()
        if base in LOCALES:
            return base
    return None


def select_locale() -> str:
    explicit = request.args.get("lang")
    if explicit in LOCALES:
        g.set_lang = explicit
        return explicit
    from_request = _from_ui_locales(request.args.get("ui_locales")) or _from_ui_locales(g.get("ui_locales"))
    if from_request:
        return from_request
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LOCALES:
        return cookie
    return request.accept_languages.best_match(LOCALES) or "ja"


def claim_label(name: str) -> str:
    label = CLAIM_LABELS.get(name)
    if label is None and name.startswith("age_over_"):
        return gettext("Aged %(n)s or over", n=name.removeprefix("age_over_"))
    return str(label or name)


def claim_value(name: str, value: Any) -> str:
    if value is None:
        return gettext("(not available)")
    if isinstance(value, bool):
        return gettext("Yes") if value else gettext("No")
    if name == "gender":
        return {"male": gettext("Male"), "female": gettext("Female")}.get(value, str(value))
    if isinstance(value, dict):
        return str(value.get("formatted", ""))
    return str(value)


def switch_locale_url(code: str) -> str:
    args = request.args.to_dict()
    args["lang"] = code
    return f"{request.path}?{urlencode(args)}"


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "ja")
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals.update(
        current_locale=lambda: str(get_locale() or "ja"), switch_locale_url=switch_locale_url,
        claim_label=claim_label, claim_value=claim_value,
        category_label=lambda c: str(CATEGORY_LABELS.get(c, c)))

    @app.after_request
    def _remember_language(response: Response) -> Response:
        if g.get("set_lang"):
            response.set_cookie(LANG_COOKIE, g.set_lang, max_age=365 * 24 * 3600, samesite="Lax", httponly=True)
        return response
