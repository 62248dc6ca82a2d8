"""Languages: Japanese by default, English available (Flask-Babel catalogues).

Choice order (PROTOCOL §6 "ui_locales wins over Accept-Language"):

1. ``?lang=`` on this request: the person pressed the language switch just now;
2. a switch the person made *during* the current sign-in (the ``idp_lang`` cookie is
   newer than the transaction), so the choice sticks from the login page to consent;
3. the RP's ``ui_locales`` (kept with its transaction, or on ``/authorize`` itself);
4. an earlier switch (the ``idp_lang`` cookie);
5. the browser's ``Accept-Language``;
6. Japanese.

The catalogues live in ``idp/translations/{ja,en}/LC_MESSAGES/messages.po``. ``.mo``
files are build products (git-ignored): ``make install`` compiles them, and
:func:`ensure_compiled` compiles any missing or stale one when the app starts (into the
instance folder when the package folder is read-only), so a fresh clone, the test suite
and an installed wheel all speak Japanese without a manual step.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, render_template, request
from flask_babel import (Babel, force_locale, format_date, format_datetime, get_locale, get_translations, gettext,
                         lazy_gettext)

from idp.context import services

log = logging.getLogger(__name__)

LOCALES = ("ja", "en")
LANG_COOKIE = "idp_lang"
TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"

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
DEVICE_STATES = {
    "pending": lazy_gettext("Not activated yet"),
    "active": lazy_gettext("In use"),
    "revoked": lazy_gettext("Revoked"),
    "suspended": lazy_gettext("Suspended until you prove your identity again"),
    "expired": lazy_gettext("Expired"),
}
REVOCATION_REASONS = {
    "keyCompromise": lazy_gettext("lost or stolen"),
    "cessationOfOperation": lazy_gettext("no longer used"),
    "superseded": lazy_gettext("replaced"),
    "affiliationChanged": lazy_gettext("details changed"),
    "certificateHold": lazy_gettext("on hold"),
    "unspecified": lazy_gettext("no reason given"),
}
CHANNELS = {
    "id_token": lazy_gettext("when you signed in"),
    "userinfo": lazy_gettext("when the service asked again later"),
}

# What a person reads when a browser page refuses: one message per machine error code.
ERROR_MESSAGES = {
    "other_browser": lazy_gettext(
        "This sign-in was started in another browser. For your safety it can only continue there."),
    "already_answered": lazy_gettext(
        "You have already answered this request. Nothing more was shared."),
    "invalid_transaction": lazy_gettext(
        "This sign-in can no longer continue. Go back to the service and start again."),
    "expired": lazy_gettext("This sign-in has expired. Go back to the service and start again."),
    "login_required": lazy_gettext("Your sign-in has ended. Go back to the service and sign in again."),
    "invalid_csrf": lazy_gettext(
        "This form is out of date or was changed. Nothing was shared or changed. Please start again."),
    "invalid_request": lazy_gettext("The request was not complete. Nothing was shared or changed."),
    "not_found": lazy_gettext("We could not find this page or sign-in. It may have ended."),
    "access_denied": lazy_gettext("This is not allowed. Nothing was shared or changed."),
    "rate_limited": lazy_gettext("Too many attempts. Please wait a minute and try again."),
    "unsafe_request": lazy_gettext(
        "The service that sent you here made a request we cannot safely answer. Nothing was shared."),
    "server_error": lazy_gettext("Something went wrong on our side. Nothing was shared. Please try again later."),
}

# The next step that can work, per refusal: never "try again" where retrying cannot help.
NEXT_STEPS = {
    "other_browser": lazy_gettext(
        "Go back to the browser where you started, or open the service again in this browser and sign in there."),
    "already_answered": lazy_gettext(
        "Nothing more to do here. To sign in again, open the service and choose to sign in."),
    "invalid_transaction": lazy_gettext("Open the service again and choose to sign in."),
    "expired": lazy_gettext("Open the service again and choose to sign in."),
    "login_required": lazy_gettext("Open the service again and choose to sign in."),
    "invalid_csrf": lazy_gettext("Open the service again and choose to sign in."),
    "not_found": lazy_gettext("Open the service again and choose to sign in."),
    "rate_limited": lazy_gettext("Wait one minute, then reload this page."),
    "server_error": lazy_gettext("Wait a few minutes, then open the service again. If it keeps happening, see Help."),
}
DEFAULT_NEXT_STEP = lazy_gettext("Go back to the service you came from. If you need help, see the help page.")

# Why a device signature was refused (the ``error`` of /login/assertion and /login/status).
LOGIN_FAILURES = {
    "certificate_revoked": lazy_gettext(
        "This device has been revoked, so it can no longer sign in. Use another of your devices, "
        "or enrol again with your My Number Card."),
    "certificate_suspended": lazy_gettext(
        "This device is on hold. Prove your identity again with your My Number Card to use it."),
    "certificate_expired": lazy_gettext(
        "This device's certificate has expired. Enrol again with your My Number Card."),
    "certificate_pending": lazy_gettext("This device has not finished enrolment yet (it is not activated)."),
    "credential_locked": lazy_gettext(
        "There were too many failed attempts, so this device is locked for a while. Please try again later."),
    "unknown_credential": lazy_gettext(
        "This passkey is not enrolled with JP Digital ID. Enrol it first with your My Number Card."),
    "counter_regression": lazy_gettext(
        "This device's key may have been copied. It is on hold until you prove your identity again."),
    "rate_limited": lazy_gettext("Too many attempts. Please wait a minute and try again."),
    "code_mismatch": lazy_gettext(
        "Your phone reported that its number was different, so this sign-in was stopped for your safety. "
        "Nothing was shared. If you started it yourself, start it again and check the number."),
}
LOGIN_FAILED = lazy_gettext("The signature was not accepted. You can try again.")


# ---- choosing the language ----

def _from_ui_locales(value: Any) -> str | None:
    for tag in (value if isinstance(value, str) else "").split():
        base = tag.split("-")[0].lower()
        if base in LOCALES:
            return base
    return None


def _cookie_choice() -> tuple[str | None, float]:
    """The remembered switch: ``"en"`` (old form) or ``"en.<unix time of the switch>"``."""
    raw = request.cookies.get(LANG_COOKIE) or ""
    code, _, when = raw.partition(".")
    if code not in LOCALES:
        return None, 0.0
    try:
        return code, float(when) if when else 0.0
    except ValueError:
        return code, 0.0


def select_locale() -> str:
    explicit = request.args.get("lang")
    if explicit in LOCALES:
        g.set_lang = explicit
        return explicit
    cookie, switched_at = _cookie_choice()
    started = g.get("ui_locales_since")
    if cookie and started is not None and switched_at >= started:
        return cookie
    from_request = _from_ui_locales(request.args.get("ui_locales")) or _from_ui_locales(g.get("ui_locales"))
    if from_request:
        return from_request
    if cookie:
        return cookie
    return request.accept_languages.best_match(LOCALES) or "ja"


def use_transaction_locale(ui_locales: Any, started: datetime | None) -> None:
    """Called when a page loads its authorization transaction (before anything is translated)."""
    g.ui_locales = ui_locales if isinstance(ui_locales, str) else None
    g.ui_locales_since = started.timestamp() if started else None


def current_locale() -> str:
    return str(get_locale() or "ja")


# ---- words for values ----

def claim_label(name: str) -> str:
    label = CLAIM_LABELS.get(name)
    if label is None and name.startswith("age_over_"):
        return gettext("Aged %(n)s or over", n=name.removeprefix("age_over_"))
    return str(label or name)


def format_day(value: date | str | None) -> str:
    """A calendar date in words: 1980年1月1日 / January 1, 1980."""
    if not value:
        return gettext("(not available)")
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            return value
    return format_date(value, format="long")


def format_moment(value: datetime | None) -> str:
    """A point in time in Japan time, e.g. 2026年11月25日 10:05 / Nov 25, 2026, 10:05 AM."""
    if value is None:
        return gettext("never")
    return format_datetime(value, format="medium")


def claim_value(name: str, value: Any) -> str:
    if name == "verified_claims":
        return gettext("Your name, date of birth, gender and address, marked as checked with your "
                       "My Number Card (for anti-money-laundering checks)")
    if value is None:
        return gettext("(not available)")
    if isinstance(value, bool):
        return gettext("Yes") if value else gettext("No")
    if name == "gender":
        return {"male": gettext("Male"), "female": gettext("Female"),
                "1": gettext("Male"), "2": gettext("Female")}.get(str(value), gettext("Not stated"))
    if name == "birthdate":
        return format_day(value)
    if isinstance(value, dict):
        return str(value.get("formatted", ""))
    return str(value)


CLAIM_ORDER = ("name", "birthdate", "gender", "address", "age_over_18", "age_over_65", "verified_claims")


def ordered_claims(names: Any) -> list[str]:
    """Claims in the order a person reads them on their card: name, birth date, gender, address."""
    return sorted(names or (), key=lambda n: (CLAIM_ORDER.index(n) if n in CLAIM_ORDER else len(CLAIM_ORDER), n))


def client_name(client: Any) -> str:
    """An RP's display name in the page language (``client_name#ja``, OIDC Registration §2.1)."""
    metadata = getattr(client, "client_metadata", None)  # a Client row
    if not isinstance(metadata, dict):
        metadata = getattr(client, "metadata", None)  # a RegisteredClient
    if not hasattr(metadata, "items"):
        metadata = {}
    locale = current_locale()
    for key, value in metadata.items():
        if key.startswith("client_name#") and isinstance(value, str) and value:
            if key.split("#", 1)[1].split("-")[0].lower() == locale:
                return value
    return str(metadata.get("client_name") or getattr(client, "client_id", ""))


def category_label(code: str) -> str:
    return str(CATEGORY_LABELS.get(code, code))


def device_state_label(state: str) -> str:
    return str(DEVICE_STATES.get(state, state))


def reason_label(reason: str | None) -> str:
    return str(REVOCATION_REASONS.get(reason or "", reason or ""))


def channel_label(channel: str) -> str:
    return str(CHANNELS.get(channel, channel))


def error_message(code: str | None) -> str:
    return str(ERROR_MESSAGES.get(code or "", ERROR_MESSAGES["invalid_request"]))


def next_step(code: str | None) -> str:
    return str(NEXT_STEPS.get(code or "", DEFAULT_NEXT_STEP))


def error_page(code: str | None, status: int, *, detail: str | None = None, retry_url: str | None = None,
               title: str | None = None) -> tuple[str, int]:
    """A refusal as a page in the person's language, naming the next step that can work;
    nothing granted, nothing recorded."""
    html = render_template("error.html", message=error_message(code), detail=detail, code=code,
                           retry_url=retry_url, title=title, next_step=next_step(code))
    return html, status


def login_failure_message(code: str | None) -> str:
    return str(LOGIN_FAILURES.get(code or "", LOGIN_FAILED))


def login_messages() -> dict[str, str]:
    """Every message the login page script may show, translated, keyed by code (built once
    per language: the catalogues do not change while the process runs)."""
    locale = current_locale()
    messages = _LOGIN_MESSAGES.get(locale)
    if messages is None:
        messages = _LOGIN_MESSAGES[locale] = _login_messages()
    return messages


_LOGIN_MESSAGES: dict[str, dict[str, str]] = {}


def _login_messages() -> dict[str, str]:
    messages = {code: str(text) for code, text in LOGIN_FAILURES.items()}
    messages.update(
        failed=str(LOGIN_FAILED),
        expired=error_message("expired"),
        pending=gettext("Waiting for your approval…"),
        opened=gettext("Opened on your phone. Check the number and press “Approve” there."),
        working=gettext("Follow the instructions from your browser or device…"),
        cancelled=gettext("Sign-in on this device was cancelled or did not work. "
                          "You can press the button again, or use another device."),
        unsupported=gettext("This browser cannot sign in with a key kept on the device. Use your phone instead."),
        network=gettext("The connection was interrupted. Trying again…"),
        success=gettext("Signed in. Continuing…"),
        expiring=gettext("This sign-in will end in %(minutes)s minutes unless you ask for more time.",
                         minutes="{minutes}"),
        extended=gettext("You have %(minutes)s more minutes.", minutes="{minutes}"),
    )
    return messages


def switch_locale_url(code: str) -> str:
    args = request.args.to_dict() if request.method == "GET" else {}
    args["lang"] = code
    path = request.path if request.method == "GET" else "/"
    return f"{path}?{urlencode(args)}"


# ---- catalogues ----

def ensure_compiled(app: Flask) -> list[str]:
    """Compile each ``messages.po`` whose ``.mo`` is missing or older; returns the directories
    Flask-Babel should read (the package's, or a compiled copy under the instance folder)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    directories = [str(TRANSLATIONS)]
    fallback = Path(app.instance_path) / "translations"
    for po_path in sorted(TRANSLATIONS.glob("*/LC_MESSAGES/messages.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as source:
            catalog = read_po(source, locale=po_path.parent.parent.name)
        try:
            _write_atomically(mo_path, catalog, write_mo)
        except OSError:
            target = fallback / po_path.relative_to(TRANSLATIONS).with_suffix(".mo")
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, catalog, write_mo)
            if str(fallback) not in directories:
                directories.insert(0, str(fallback))
            log.info("compiled %s into %s (package folder is read-only)", po_path, target)
    return directories


def _write_atomically(path: Path, catalog: Any, write_mo: Any) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with temporary.open("wb") as out:
        write_mo(out, catalog)
    temporary.replace(path)


def _translations() -> Any:
    """The request's catalogue, looked up once per request: a page calls gettext some thirty
    times, and Flask-Babel's own lookup walks its contexts on every call. Flask-Babel fixes a
    request's locale at its first lookup too, so the catalogue cannot change after it."""
    translations = g.get("translations")
    if translations is None:
        translations = g.translations = get_translations()
    return translations


def warm_up(app: Flask) -> None:
    """Load each language's catalogue and date formats, and compile every page template,
    once: ``idp serve`` calls this in the arbiter before it forks, so the workers share the
    result instead of each paying for it on its first pages (tens of milliseconds a page)."""
    for name in app.jinja_env.list_templates(filter_func=lambda name: name.endswith(".html")):
        app.jinja_env.get_template(name)
    with app.test_request_context():
        for locale in LOCALES:
            with force_locale(locale):
                gettext("Yes")
                format_day(date(2000, 1, 1))
                format_moment(datetime(2000, 1, 1, tzinfo=timezone.utc))


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", "ja")
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", "Asia/Tokyo")
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = ";".join(ensure_compiled(app))
    Babel(app, locale_selector=select_locale)
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=lambda text: _translations().ugettext(text),
        ngettext=lambda singular, plural, n: _translations().ungettext(singular, plural, n),
        newstyle=True)
    app.jinja_env.globals.update(
        current_locale=current_locale, switch_locale_url=switch_locale_url,
        claim_label=claim_label, claim_value=claim_value, category_label=category_label,
        device_state_label=device_state_label, reason_label=reason_label, channel_label=channel_label,
        format_day=format_day, format_moment=format_moment, login_messages=login_messages,
        error_message=error_message, login_failure_message=login_failure_message, client_name=client_name)
    app.jinja_env.filters["ordered_claims"] = ordered_claims

    @app.after_request
    def _remember_language(response: Response) -> Response:
        if g.get("set_lang"):
            response.set_cookie(LANG_COOKIE, f"{g.set_lang}.{int(time.time())}", max_age=365 * 24 * 3600,
                                samesite="Lax", httponly=True,
                                secure=services().settings.issuer.startswith("https://"))
            response.vary.add("Cookie")
        return response
