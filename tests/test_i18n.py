"""Japanese and English for every page and message (Flask-Babel catalogues).

- every message in the code and templates is in both catalogues, the Japanese one
  translated, with the same placeholders;
- missing ``.mo`` files are compiled when the app starts (a fresh clone just works);
- the language: ``?lang`` switch > a switch made during this sign-in > ``ui_locales`` >
  an earlier switch > ``Accept-Language`` > Japanese;
- refusals of browser pages (bad CSRF, someone else's transaction, a double submit)
  are pages in the person's language, and RP-supplied text is escaped everywhere.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from flask import Flask

from idp.web import i18n
from idp.web.consent import safe_link
from tests.conftest import RunningIdP
from tests.support import core
from tests.support.rp import browser_login, parse_consent_form

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "idp" / "translations"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def source_messages() -> set[str]:
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "lazy_gettext": None, "ngettext": (1, 2)}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT / "idp"), method_map=method_map, keywords=keywords):
        found.add(message if isinstance(message, str) else message[0])
    return found


def catalogue(locale: str):  # type: ignore[no-untyped-def]
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as source:
        return read_po(source, locale=locale)


def test_every_message_is_in_both_catalogues_and_translated_to_japanese() -> None:
    messages = source_messages()
    assert len(messages) > 150
    for locale in ("ja", "en"):
        entries = {m.id: m for m in catalogue(locale) if m.id}
        missing = sorted(messages - set(entries))
        assert not missing, f"{locale} catalogue lacks: {missing[:5]} (run `make messages`, then translate)"
        fuzzy = sorted(i for i in messages if entries[i].fuzzy or (locale == "ja" and not entries[i].string))
        assert not fuzzy, f"{locale}: untranslated or fuzzy: {fuzzy[:5]}"
    ja = {m.id: m.string for m in catalogue("ja") if m.id}
    for message in messages:
        assert set(PLACEHOLDER.findall(message)) == set(PLACEHOLDER.findall(ja[message])), message
        if message.strip():
            assert ja[message] != message or message in ("UserInfo",), f"not translated: {message}"


def test_missing_catalogues_are_compiled_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, copy, ignore=shutil.ignore_patterns("*.mo"))
    monkeypatch.setattr(i18n, "TRANSLATIONS", copy)
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    assert i18n.ensure_compiled(app) == [str(copy)]
    assert (copy / "ja" / "LC_MESSAGES" / "messages.mo").stat().st_size > 1000
    # A read-only package folder (an installed wheel): compiled into the instance folder instead.
    for mo in copy.glob("*/LC_MESSAGES/messages.mo"):
        mo.unlink()
    real_write = i18n._write_atomically

    def read_only_package(path: Path, *args: object) -> None:
        if copy in path.parents:
            raise PermissionError(f"read-only: {path}")
        real_write(path, *args)

    monkeypatch.setattr(i18n, "_write_atomically", read_only_package)
    directories = i18n.ensure_compiled(app)
    assert directories == [str(tmp_path / "instance" / "translations"), str(copy)]
    assert (tmp_path / "instance" / "translations" / "ja" / "LC_MESSAGES" / "messages.mo").exists()


def get(url: str, session: requests.Session | None = None, **headers: str) -> requests.Response:
    return (session or requests).get(url, headers={"Accept": "text/html", **headers})


def lang_of(html: str) -> str:
    match = re.search(r'<html lang="(\w+)"', html)
    assert match, "no lang attribute"
    return match.group(1)


def test_japanese_by_default_english_by_accept_language(idp: RunningIdP) -> None:
    ja = get(f"{idp.base_url}/account")
    assert lang_of(ja.text) == "ja" and "マイアカウントにログイン" in ja.text
    en = get(f"{idp.base_url}/account", **{"Accept-Language": "en-GB,en;q=0.9"})
    assert lang_of(en.text) == "en" and "Sign in to your account" in en.text
    fr = get(f"{idp.base_url}/account", **{"Accept-Language": "fr"})
    assert lang_of(fr.text) == "ja"


def test_language_switch_is_remembered(idp: RunningIdP, browser: requests.Session) -> None:
    switched = get(f"{idp.base_url}/account?lang=en", browser, **{"Accept-Language": "ja"})
    assert lang_of(switched.text) == "en"
    assert 'href="/account?lang=ja"' in switched.text  # the switch back, on every page
    later = get(f"{idp.base_url}/", browser, **{"Accept-Language": "ja"})
    assert lang_of(later.text) == "en"


def test_ui_locales_wins_over_accept_language_and_a_switch_during_sign_in_wins_over_it(
        idp: RunningIdP, browser: requests.Session) -> None:
    rp = core.register(idp, "municipal")
    device = core.enrol(idp)
    browser.headers["Accept-Language"] = "ja"
    location = rp.start(browser, ui_locales="en-US ja")
    login_url = urljoin(idp.base_url, location)
    login = get(login_url, browser)
    assert lang_of(login.text) == "en" and "Sign in to" in login.text
    # The person switches to Japanese on the login page: it sticks for this sign-in.
    switched = get(login_url + "&lang=ja", browser)
    assert lang_of(switched.text) == "ja" and "確認番号" in switched.text
    wallet = idp.wallet(browser)
    answer = wallet.login(core.txn_of(location), authenticator=device)
    consent = get(urljoin(idp.base_url, answer["next"]), browser)
    assert lang_of(consent.text) == "ja" and "提供される情報" in consent.text


def test_refusals_are_pages_in_the_persons_language(idp: RunningIdP, browser: requests.Session) -> None:
    rp = core.register(idp, "medical")
    device = core.enrol(idp)
    location = rp.start(browser, ui_locales="en")
    answer = idp.wallet(browser).login(core.txn_of(location), authenticator=device)
    consent_url = urljoin(idp.base_url, answer["next"])
    form = parse_consent_form(get(consent_url, browser).text)

    tampered = [(k, "0" * 64 if k == "csrf_token" else v) for k, v in form.submission("allow")]
    bad = browser.post(f"{idp.base_url}/consent", data=tampered, headers={"Accept": "text/html"})
    assert bad.status_code == 403 and lang_of(bad.text) == "en"
    assert "This form is out of date or was changed" in bad.text and 'data-error="invalid_csrf"' in bad.text
    with requests.Session() as other:  # someone else's browser: refused, in the language it asks for
        foreign = other.post(f"{idp.base_url}/consent?lang=ja", data=form.submission("allow"),
                             headers={"Accept": "text/html"})
        assert foreign.status_code == 403 and "別のブラウザ" in foreign.text
        assert get(consent_url, other).status_code == 403
        assert get(urljoin(idp.base_url, location), other).status_code == 403  # the login page too

    done = browser.post(f"{idp.base_url}/consent", data=form.submission("allow"), allow_redirects=False)
    assert done.status_code == 302 and "code=" in done.headers["Location"]
    twice = browser.post(f"{idp.base_url}/consent", data=form.submission("allow"), headers={"Accept": "text/html"})
    assert twice.status_code == 403 and "You have already answered this request" in twice.text

    missing = get(f"{idp.base_url}/login?txn=does-not-exist", browser)
    assert missing.status_code == 404 and 'data-error="invalid_transaction"' in missing.text


def test_rp_text_is_escaped_and_only_http_links_are_shown(idp: RunningIdP, browser: requests.Session) -> None:
    evil = '<script>alert("x")</script>'
    rp = core.register(idp, "municipal", client_name=f"City {evil}", purpose=f"Because {evil}",
                       logo_uri="https://city.example/logo.png?a=1&b=<2>",
                       policy_uri="https://city.example/policy", tos_uri="https://city.example/terms")
    device = core.enrol(idp)
    location = rp.start(browser)
    login_page = get(urljoin(idp.base_url, location), browser).text
    assert evil not in login_page and "&lt;script&gt;" in login_page
    answer = idp.wallet(browser).login(core.txn_of(location), authenticator=device)
    page = get(urljoin(idp.base_url, answer["next"]), browser).text
    assert evil not in page and "City &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "Because &lt;script&gt;" in page
    assert 'src="https://city.example/logo.png?a=1&amp;b=&lt;2&gt;"' in page
    assert 'href="https://city.example/policy"' in page and 'href="https://city.example/terms"' in page
    assert 'data-claim="name"' in page and "前橋　太郎" in page  # each claim with its value
    for bad in ("javascript:alert(1)", "data:text/html,x", "//evil.example/x", "https://", 42, None,
                "https://ok.example/\nx"):
        assert safe_link(bad) is None
    assert safe_link("http://localhost:8000/logo.svg") == "http://localhost:8000/logo.svg"


def test_consent_works_without_javascript_and_remember_is_optional(idp: RunningIdP,
                                                                    browser: requests.Session) -> None:
    rp = core.register(idp, "transport")
    device = core.enrol(idp)
    callback = browser_login(browser, idp.base_url, rp.start(browser, ui_locales="ja"), idp.wallet(), device,
                             remember=False, redirect_uri=rp.redirect_uri)
    assert "code=" in callback
    location = rp.start(browser)  # not remembered: asked again (the IdP session skips the login)
    assert urlsplit(location).path == "/consent"
    html = get(urljoin(idp.base_url, location), browser).text
    assert "18歳以上" in html and "はい" in html and "交通事業者" in html
    assert "<script" not in html.split("</main>")[0].split("<main")[1]  # the form needs no script


def test_warm_up_leaves_no_page_to_compile(idp: RunningIdP, monkeypatch: pytest.MonkeyPatch) -> None:
    """`idp serve` warms up before forking: afterwards no page template is compiled again
    (a worker's first pages would otherwise each pay for it)."""
    i18n.warm_up(idp.app)

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError("a template was compiled after the warm-up")

    monkeypatch.setattr(idp.app.jinja_env, "compile", no_compile)
    names = idp.app.jinja_env.list_templates(filter_func=lambda name: name.endswith(".html"))
    assert "login.html" in names and "consent.html" in names
    for name in names:
        idp.app.jinja_env.get_template(name)
