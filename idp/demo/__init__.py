"""The newcomer's demo (development only): ``/demo``, a demo wallet and four demo RPs.

``create_app`` registers this package only when the issuer is a loopback http URL
(``Settings.development``); on any other issuer every ``/demo`` URL is a plain 404.
The views check again on every request, so a mistake elsewhere cannot expose it.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from idp.demo.views import bp

    app.register_blueprint(bp)
