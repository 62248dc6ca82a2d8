"""The whole core path (tests/test_core_e2e.py) again, with the CA key and the ID-token
signing keys in a SoftHSM2 token (PROTOCOL §7.5): every test of that module runs here
against an IdP whose keys were generated and are used in the token."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from idp.proofing.demo_card import TestJpkiCA
from idp.signing.pkcs11 import Pkcs11KeyBackend
from tests.conftest import RunningIdP, start_idp
from tests.support.softhsm import shared_softhsm
from tests.test_core_e2e import *  # noqa: F401,F403  (the core path's tests and fixtures, re-collected here)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jpki_ca: TestJpkiCA) -> Iterator[RunningIdP]:  # noqa: F811
    env = shared_softhsm(tmp_path_factory).token("core-e2e")
    with contextlib.contextmanager(start_idp)(tmp_path_factory.mktemp("e2e-hsm"), jpki_ca, env=env) as running:
        assert isinstance(running.services().keystore.backend, Pkcs11KeyBackend)
        yield running
