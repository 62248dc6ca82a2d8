"""Test people for a running IdP, shared by the in-process and the served harness."""

from __future__ import annotations

from typing import Any

import requests

from idp.proofing.demo_card import TestCard, TestJpkiCA
from idp.settings import Settings
from tests.support.authenticator import SoftAuthenticator
from tests.support.wallet import Wallet


class People:
    """Cards from the IdP's TEST JPKI CA, wallets and authenticators for its origin."""

    base_url: str
    settings: Settings
    jpki_ca: TestJpkiCA
    issued_cards: list[TestCard]

    def card(self, **overrides: Any) -> TestCard:
        """A new test My Number Card (a new person unless the same card is reused)."""
        card = self.jpki_ca.issue_card(**overrides)
        self.issued_cards.append(card)
        return card

    def wallet(self, session: requests.Session | None = None) -> Wallet:
        return Wallet(self.base_url, session=session)

    def authenticator(self, **kwargs: Any) -> SoftAuthenticator:
        return SoftAuthenticator(self.settings.rp_id, self.settings.issuer_origin, **kwargs)
