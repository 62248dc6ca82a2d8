"""The ``idp`` command: serve, initialise, and the operator's lifecycle commands (PROTOCOL §1, §6).

Every command reads the deployment's ``IDP_*`` environment. An error exits non-zero
with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import sys
from multiprocessing.connection import Connection
from typing import Callable, Sequence

from idp.settings import Settings


class CommandError(Exception):
    """A refusal the operator should read: one line, non-zero exit."""


def _settings() -> Settings:
    return Settings.from_env()


def cmd_init(args: argparse.Namespace) -> None:
    from idp.context import initialise

    created = initialise(_settings())
    for item in created:
        print(f"created: {item}")


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    """Migrate; the first upgrade past the key schedule's migration also imports the signing
    keys an earlier version kept in ``keys/signing/index.json`` (from any instance's copy)."""
    from idp.context import schedule_signing_keys
    from idp.keystore import KeyStore
    from idp.signing import key_backend
    from idp.storage.db import Database

    settings = _settings()
    database = Database(settings.database_url)
    try:
        changed = database.upgrade()
        imported = schedule_signing_keys(settings, KeyStore(database, key_backend(settings)), create=False)
    finally:
        database.dispose()
    print("database schema migrated to the newest revision" if changed else "database schema already current")
    if imported:
        print(imported)


def cmd_serve(args: argparse.Namespace) -> None:
    """Serve; in development create what is missing first (PROTOCOL §1). Outside development
    only ``idp init`` creates keys, CA, salt and secret: a missing one is a refusal naming
    it, before anything is created (PROTOCOL §7.6), never a new identity for everyone."""
    from idp.context import missing_for_serving
    from idp.ops import serving

    settings = _settings()
    if not settings.development:
        missing = missing_for_serving(settings)
        if missing:
            raise CommandError(f"refusing to start with issuer {settings.issuer}: missing {'; '.join(missing)}; "
                               "create them with `idp init` (or restore the keys folder)")
    serving.prepare_metrics_dir()  # before prometheus_client is imported by the app

    from gunicorn.app.base import BaseApplication

    from idp import create_app
    from idp.ops import logs
    from idp.web import i18n

    _initialise_apart(settings)
    app = create_app(settings)
    logs.configure()  # after start-up: a refusal to start stays one plain line (main)
    if settings.development and not settings.registration_token:
        logs.access.getChild("serve").warning(
            "IDP_REGISTRATION_TOKEN is unset: client registration is open (development issuer)")
    workers = args.workers or min(multiprocessing.cpu_count() + 1, 8)  # gthread workers, 4 threads each

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", args.worker_class)
            self.cfg.set("threads", args.threads if args.worker_class == "gthread" else 1)
            self.cfg.set("accesslog", None)
            self.cfg.set("timeout", 30)
            # X-Forwarded-* are trusted only as IDP_PROXY_HOPS says, by ProxyFix in the app;
            # gunicorn must not trust them on its own (its default trusts any loopback peer).
            self.cfg.set("forwarded_allow_ips", "*" if settings.proxy_hops else "")
            self.cfg.set("graceful_timeout", serving.GRACEFUL_TIMEOUT)
            self.cfg.set("child_exit", serving.child_exit)
            self.cfg.set("logger_class", serving.json_logger_class())
            self.cfg.set("post_fork", serving.post_fork_database(app.extensions["idp"].db))
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25
                # No management socket: its default path is shared by every instance on the host.
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("limit_request_line", 8190)  # request objects by value in a GET (OIDC Core §6.1)

        def load(self):  # type: ignore[no-untyped-def]
            return app

    i18n.warm_up(app)  # before the fork: the workers share compiled templates and locale data
    logs.access.getChild("serve").info("serving %s on http://%s:%s with %d workers", settings.issuer, args.host,
                                       args.port, workers)
    Server().run()


def _initialise_apart(settings: Settings) -> None:
    """``initialise`` in a forked child, whose answer is the schema's head revision(s).

    Migrating needs alembic, about 11 MiB of memory that every worker forked from this
    process would carry for nothing; the child carries it and exits. The heads it reads
    from the migrations let ``/readyz`` compare the database's revision without alembic.
    Outside development nothing is created here: only the schema may be new and an earlier
    version's key files imported.
    """
    from idp.storage import db

    fork = multiprocessing.get_context("fork")
    receiver, sender = fork.Pipe(duplex=False)
    child = fork.Process(target=_initialise_child, args=(settings, sender), name="idp-initialise")
    child.start()
    sender.close()
    try:
        outcome, value = receiver.recv()
    except EOFError:  # the child died without an answer (killed, out of memory)
        outcome, value = "error", "initialisation stopped without an answer"
    child.join()
    if outcome != "ok":
        raise CommandError(value)
    db.remember_code_heads(value)


def _initialise_child(settings: Settings, sender: Connection) -> None:
    from idp import audit
    from idp.context import initialise
    from idp.keystore import KeyStoreError
    from idp.storage import db

    try:
        initialise(settings, create_keys=settings.development)
        audit.flush_anchor()
        sender.send(("ok", db.code_heads()))
    except KeyStoreError as exc:
        sender.send(("refused", f"refusing to start with issuer {settings.issuer}: {exc}"))
    except Exception as exc:
        sender.send(("error", _one_line(exc)))


def _in_transaction(work: Callable[..., str]) -> str:
    """Run ``work(session, services)`` as one transaction: all of it commits, or nothing."""
    from idp import audit
    from idp.context import load_services

    settings = _settings()
    # JPKI CRLs are read only by the command that refreshes them (it reloads them itself):
    # a corrupt CRL file must not stop the operator revoking a lost phone.
    services = load_services(dataclasses.replace(settings, jpki_crls=None))
    services.settings = settings
    try:
        with services.db.transaction() as session:
            session.info[audit.ANCHOR_DIR_KEY] = services.settings.keys_dir
            result = work(session, services)
        audit.flush_anchor()  # a command's entries are anchored before it returns
        return result
    finally:
        services.db.dispose()


def cmd_ca_revoke(args: argparse.Namespace) -> None:
    from idp.ca import lifecycle
    from idp.ca.crl import parse_reason

    try:
        reason = parse_reason(args.reason).value
    except ValueError as exc:
        raise CommandError(str(exc)) from None

    def work(session, services):  # type: ignore[no-untyped-def]
        device = lifecycle.find(session, args.serial)
        lifecycle.revoke(session, device, reason=reason, by="operator")
        lifecycle.current_crl(session, services.ca)
        state = "suspended" if reason == "certificateHold" else "revoked"
        return f"{state} {device.serial} ({reason}); CRL re-signed"

    print(_in_transaction(work))


def _parse_serial(text: str) -> int:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise CommandError(f"{text!r} is not a hexadecimal serial number") from None
    if value <= 0 or len(cleaned) > 40:
        raise CommandError(f"{text!r} is not a valid certificate serial number")
    return value


def cmd_jpki_link(args: argparse.Namespace) -> None:
    from idp.proofing.linkage import link_serials

    pairs: list[tuple[int, int]] = []
    if args.file:
        try:
            with open(args.file, newline="", encoding="utf-8") as handle:
                for number, row in enumerate(csv.reader(handle), start=1):
                    if not row or row[0].startswith("#") or row[0].strip().lower() == "old":
                        continue
                    if len(row) != 2:
                        raise CommandError(f"{args.file}:{number}: expected two columns old,new; nothing imported")
                    try:
                        pairs.append((_parse_serial(row[0]), _parse_serial(row[1])))
                    except CommandError as exc:
                        raise CommandError(f"{args.file}:{number}: {exc}; nothing imported") from None
        except OSError as exc:
            raise CommandError(f"{args.file}: {exc.strerror}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CommandError(f"{args.file}: not a UTF-8 CSV file of old,new serials ({exc})") from None
        if args.old or args.new:
            raise CommandError("give either OLD NEW or --file F, not both")
        if not pairs:
            raise CommandError(f"{args.file}: no old,new pairs found")
    elif args.old and args.new:
        pairs.append((_parse_serial(args.old), _parse_serial(args.new)))
    else:
        raise CommandError("give OLD NEW or --file F")
    print(_in_transaction(lambda session, services: link_serials(session, services, pairs)))


def cmd_jpki_refresh_crls(args: argparse.Namespace) -> None:
    from idp.proofing.linkage import apply_jpki_revocations

    print(_in_transaction(apply_jpki_revocations))


def _verified(session, anchor) -> str:  # type: ignore[no-untyped-def]
    """Verify the whole log (streaming); the summary line, or a CommandError naming the break."""
    from idp import audit

    result = audit.check(session, anchor)
    if result.broken is not None:
        raise CommandError(f"audit chain broken at entry {result.broken.seq}: {result.broken.reason}")
    if anchor:
        heads = ", ".join(f"entry {h.seq}" + (f" of chain {c}" if c else "") for c, h in sorted(anchor.items()))
        anchored = f", head anchor at {heads}"
    else:
        anchored = ", no head anchor yet"
    return f"audit chain intact: {result.entries} entries in {result.chains} chain(s){anchored}"


def cmd_audit_verify(args: argparse.Namespace) -> None:
    from idp import audit

    anchor = audit.read_anchor(_settings().keys_dir)  # before the entries: later commits only lengthen the log
    print(_in_transaction(lambda session, services: _verified(session, anchor)))


def cmd_audit_archive(args: argparse.Namespace) -> None:
    from datetime import datetime, timezone
    from pathlib import Path

    from idp import audit

    try:
        before = datetime.fromisoformat(args.before)
    except ValueError:
        raise CommandError(f"--before {args.before!r} is not an ISO date (YYYY-MM-DD)") from None
    before = before if before.tzinfo else before.replace(tzinfo=timezone.utc)
    out = Path(args.out)
    if out.exists():
        raise CommandError(f"{out} exists: archives are never overwritten")
    anchor = audit.read_anchor(_settings().keys_dir)

    def work(session, services):  # type: ignore[no-untyped-def]
        _verified(session, anchor)  # never archive (and prune) a log that does not verify
        count = audit.archive(session, before, out)
        return f"archived {count} entries recorded before {before.date().isoformat()} to {out}" if count else \
            "nothing to archive"

    print(_in_transaction(work))


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    """New keys go into the shared schedule with the audit entry, in one transaction; every
    instance publishes them within IDP_KEYS_REFRESH_SECONDS, so the grace period must be
    longer: no instance may sign with a key another one does not publish yet."""
    from idp import audit

    settings = _settings()
    if args.grace <= 0:
        raise CommandError("--grace must be a positive number of seconds: relying parties need time to "
                           "fetch the new key before it signs")
    if args.grace <= settings.keys_refresh_seconds:
        raise CommandError(f"--grace must be longer than IDP_KEYS_REFRESH_SECONDS ({settings.keys_refresh_seconds} s): "
                           "every instance must publish the new keys before any signs with them")

    def work(session, services):  # type: ignore[no-untyped-def]
        kids = services.keystore.rotate(session, grace=args.grace)
        audit.record(session, "keys.rotated", kids=kids)
        return f"published new signing keys {', '.join(kids)}; used after {args.grace} s"

    print(_in_transaction(work))


def cmd_prune(args: argparse.Namespace) -> None:
    from idp.storage.prune import prune

    def work(session, services):  # type: ignore[no-untyped-def]
        counts = prune(session)
        return "pruned " + ", ".join(f"{name} {count}" for name, count in counts.items())

    print(_in_transaction(work))


def cmd_policy_show(args: argparse.Namespace) -> None:
    from idp.policy import load_policy

    settings = _settings()
    policy = load_policy(settings.policy_file, development=settings.development)
    print(json.dumps(policy.as_dict(), indent=2, ensure_ascii=False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idp", description="JP digital ID OpenID Provider")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create keys and database (idempotent)").set_defaults(func=cmd_init)
    db = sub.add_parser("db").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="migrate the database schema (safe from several instances at once)").set_defaults(
        func=cmd_db_upgrade)
    serve = sub.add_parser("serve", help="run the server under gunicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=0)
    serve.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread",
                       help="gunicorn worker class (bench/README.md compares them)")
    serve.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    serve.set_defaults(func=cmd_serve)

    ca = sub.add_parser("ca").add_subparsers(dest="ca_command", required=True)
    revoke = ca.add_parser("revoke", help="revoke a device certificate")
    revoke.add_argument("serial")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(func=cmd_ca_revoke)

    jpki = sub.add_parser("jpki").add_subparsers(dest="jpki_command", required=True)
    link = jpki.add_parser("link", help="record that JPKI serial NEW renews OLD")
    link.add_argument("old", nargs="?")
    link.add_argument("new", nargs="?")
    link.add_argument("--file")
    link.set_defaults(func=cmd_jpki_link)
    jpki.add_parser("refresh-crls", help="reload JPKI CRLs and apply revocations").set_defaults(
        func=cmd_jpki_refresh_crls)

    audit_cmd = sub.add_parser("audit").add_subparsers(dest="audit_command", required=True)
    audit_cmd.add_parser("verify", help="check the audit hash chains").set_defaults(func=cmd_audit_verify)
    archive = audit_cmd.add_parser("archive", help="export verified entries older than a date, then prune them")
    archive.add_argument("--before", required=True, help="ISO date: entries recorded before it")
    archive.add_argument("--out", required=True, help="new JSON-lines file to write")
    archive.set_defaults(func=cmd_audit_archive)

    keys = sub.add_parser("keys").add_subparsers(dest="keys_command", required=True)
    rotate = keys.add_parser("rotate", help="publish new signing keys, use them after a grace period")
    rotate.add_argument("--grace", type=int, default=24 * 3600)
    rotate.set_defaults(func=cmd_keys_rotate)

    sub.add_parser("prune", help="delete expired transactions, codes, sessions and tokens").set_defaults(
        func=cmd_prune)

    from idp.clients import commands as client_commands

    client_commands.add_parsers(sub)

    policy = sub.add_parser("policy").add_subparsers(dest="policy_command", required=True)
    policy.add_parser("show", help="print the effective category policy").set_defaults(func=cmd_policy_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as exc:  # an operator sees one line, never a traceback
        print(f"idp: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: Exception) -> str:
    if isinstance(exc, (CommandError, ValueError)):  # SettingsError, LifecycleError, PolicyError are ValueErrors
        return str(exc)
    message = " ".join(str(getattr(exc, "description", None) or exc).split())
    return f"{type(exc).__name__}: {message}"


if __name__ == "__main__":
    sys.exit(main())
