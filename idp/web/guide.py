"""The help page (``/help``): what to do when something goes wrong, in plain words.

Linked from the header and footer of every page. It covers a lost phone, a locked
phone, a new phone, a renewed My Number Card and how to reach the operator
(``IDP_SUPPORT_CONTACT``). It needs no sign-in and shows nothing about anyone.
"""

from __future__ import annotations

from flask import Blueprint, render_template
from flask.typing import ResponseReturnValue

from idp.context import services

bp = Blueprint("help", __name__)


@bp.get("/help")
def help_page() -> ResponseReturnValue:
    settings = services().settings
    return render_template("help.html", contact=settings.support_contact, demo=settings.development)
