"""Liveness and readiness for a load balancer or an orchestrator.

``/healthz`` answers while the process serves (liveness: restart me if this fails).
``/readyz`` answers 200 only when this instance can do its work: the database answers
within its timeouts, its schema is at the revision this code expects, and the signing
keys are loaded. Otherwise 503 with a JSON error naming what is missing, so a balancer
takes the instance out of rotation; it comes back by itself once the cause is gone
(each probe checks afresh, nothing is cached but the key schedule, re-read every
``IDP_KEYS_REFRESH_SECONDS``, and the pool's pre-ping replaces dead connections).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from idp.context import services
from idp.keystore import SIGNING_ALGS, KeyStoreError

bp = Blueprint("ops", __name__)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    return _no_store(jsonify({"status": "ok"}))


def _not_ready() -> str | None:
    """Why this instance cannot serve, or None when it can."""
    svc = services()
    try:
        if not svc.db.schema_at_head():
            return "the database schema is not at the revision this version needs: run `idp db upgrade`"
    except SQLAlchemyError:
        return "the database is unreachable"
    try:
        for alg in SIGNING_ALGS:
            svc.keystore.signing_key(alg)
    except KeyStoreError:
        return "the signing keys are not loaded"
    if svc.keystore.unreachable():  # before such a key comes into use on the schedule
        return "a published signing key cannot be reached from this instance (keys folder or PKCS#11 token)"
    return None


@bp.get("/readyz")
def readyz() -> Response:
    reason = _not_ready()
    if reason is None:
        return _no_store(jsonify({"status": "ready"}))
    response = jsonify({"error": "temporarily_unavailable", "error_description": reason})
    response.status_code = 503
    response.headers["Retry-After"] = "5"
    return _no_store(response)
