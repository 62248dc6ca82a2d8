"""The assurance a category's policy needs, checked once the person has signed in.

A login reaches the ``acr`` its device allows (:func:`idp.policy.reached_acr`); when the
RP's category needs more (the hardware level for ``financial`` outside development, or
whatever the operator's policy file asks of a category), signing again with the same
device cannot help. So instead of a login loop the person gets a page saying why, and
the RP gets ``access_denied`` when the person follows the link back (OIDC Core
§3.1.2.6: the request cannot be met).
"""

from __future__ import annotations

from flask import g, render_template
from flask.typing import ResponseReturnValue

from idp import audit
from idp.clients.registry import RegisteredClient
from idp.context import services
from idp.errors import AccessDenied
from idp.oidc.authorize import error_redirect
from idp.oidc.session import current_db
from idp.policy import ACR_DEVICE_HARDWARE
from idp.storage.models import AuthorizationTransaction
from idp.storage.single_use import compare_and_set


def refusal(txn: AuthorizationTransaction, client: RegisteredClient, redirect_uri: str,
            state: str | None) -> ResponseReturnValue | None:
    """A 403 page when the sign-in's ``acr`` is below the category's, else None (nothing changed)."""
    rules = services().policy[client.category]
    if rules.reached_by(txn.acr):
        return None
    required = rules.acr
    if not compare_and_set(current_db(), AuthorizationTransaction, AuthorizationTransaction.id == txn.id,
                           AuthorizationTransaction.state == "authenticated", state="denied"):
        raise AccessDenied("this sign-in has already been answered", error="already_answered")
    g.commit_despite_error = True  # the refusal is final for this transaction, kept with its audit entry
    audit.record(current_db(), "login.assurance_refused", account=txn.account_id, client=client.client_id,
                 reached=txn.acr, required=required)
    back = error_redirect(redirect_uri, "access_denied",
                          f"the {client.category} policy needs acr {required}; the device reached {txn.acr}",
                          state).location
    html = render_template("assurance_required.html", client=client, back_url=back,
                           hardware=required == ACR_DEVICE_HARDWARE)
    return html, 403
