"""A key backend that stops answering (an HSM restarting, a network HSM unreachable) is an
outage like a database one: ``503 temporarily_unavailable`` with ``Retry-After``, one log
line per interval, never a 500 per request. So is a signing key this instance cannot use
(the schedule names a key whose private half it cannot reach): it refuses to sign."""

from __future__ import annotations

from flask import Flask, Response

from idp.keystore import KeyStoreError
from idp.ops.outage import reporter, unavailable
from idp.signing import KeyBackendError


def key_backend_unavailable(exc: BaseException) -> Response:
    reporter.report("keys", "key backend (PKCS#11 token) unavailable: answering 503", exc)
    return unavailable("signing is temporarily unavailable; try again shortly")


def signing_key_unavailable(exc: BaseException) -> Response:
    reporter.report("signing-keys", "no usable signing key on this instance: answering 503", exc)
    return unavailable("signing is temporarily unavailable; try again shortly")


def init_app(app: Flask) -> None:
    app.register_error_handler(KeyBackendError, key_backend_unavailable)
    app.register_error_handler(KeyStoreError, signing_key_unavailable)
