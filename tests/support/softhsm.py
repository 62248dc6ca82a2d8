"""SoftHSM2 tokens for the PKCS#11 tests: a temporary ``SOFTHSM2_CONF`` and initialised tokens.

SoftHSM2 (Debian package ``softhsm2``) is installed by ``.ci/run`` best effort; without
it the tests that need it are skipped with a message saying so. SoftHSM reads its
configuration when a process first initialises the library, so one configuration serves
the whole test session and each test module gets a token of its own by label. SoftHSM
also lists its tokens only when the library is initialised: the tokens used in-process
(``IN_PROCESS_TOKENS``) are therefore made together with the configuration, before any
test loads the library; tokens for ``idp`` subprocesses can be made at any time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
PIN = "246810"
IN_PROCESS_TOKENS = ("core-e2e", "unit", "pin")


def softhsm_module() -> str | None:
    found = [path for path in MODULE_CANDIDATES if Path(path).exists()]
    return found[0] if found and shutil.which("softhsm2-util") else None


@dataclass(frozen=True)
class SoftHsm:
    """A SoftHSM2 configuration whose token directory lives under a test's tmp folder."""

    conf: Path
    module: str
    pin_file: Path
    labels: set[str] = field(default_factory=set)

    def token(self, label: str) -> dict[str, str]:
        """Initialise token ``label`` (once); the environment that points the IdP at it."""
        if label not in self.labels:
            self.labels.add(label)
            subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN,
                            "--so-pin", "13579086"], env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
                           check=True, capture_output=True)
        return {"SOFTHSM2_CONF": str(self.conf), "IDP_PKCS11_MODULE": self.module, "IDP_PKCS11_TOKEN": label,
                "IDP_PKCS11_PIN_FILE": str(self.pin_file)}


def make_softhsm(folder: Path) -> SoftHsm:
    module = softhsm_module()
    if module is None:
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2, which .ci/run installs best effort): "
                    "the PKCS#11 tests did not run")
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    pin_file = folder / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    return SoftHsm(conf=conf, module=module, pin_file=pin_file)


_SHARED: dict[str, SoftHsm] = {}


def shared_softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """This test process's one SoftHSM2 configuration, also set as ``SOFTHSM2_CONF`` here so
    an in-process IdP loads the library with it (it is read once per process)."""
    if "softhsm" not in _SHARED:
        softhsm = _SHARED["softhsm"] = make_softhsm(tmp_path_factory.mktemp("softhsm"))
        for label in IN_PROCESS_TOKENS:
            softhsm.token(label)
        os.environ["SOFTHSM2_CONF"] = str(softhsm.conf)
    return _SHARED["softhsm"]
