"""Test modules and their verdicts, in the official suite's vocabulary.

A module runs *conditions* (one check each, citing the requirement it mirrors). As in the
OpenID Foundation suite (``Condition.ConditionResult``), a failed FAILURE condition fails
the module, a failed WARNING condition only warns, and ``require`` is
``callAndStopOnFailure``: the module cannot go on without it. A module that raises
anything else fails with the exception named, so a crash is never a pass.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from conformance.environment import Environment


class Status(str, Enum):
    PASSED = "PASSED"
    WARNING = "WARNING"
    FAILED = "FAILED"


class Stop(Exception):
    """A FAILURE the module cannot continue past (callAndStopOnFailure)."""


@dataclass(frozen=True)
class Finding:
    severity: str  # "FAILURE" or "WARNING"
    message: str
    ref: str = ""

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}" + (f" [{self.ref}]" if self.ref else "")


class TestRun:
    """What one module execution has found so far."""

    def __init__(self, spec: ModuleSpec, env: Environment) -> None:
        self.spec = spec
        self.env = env
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.cleanups: list[Callable[[TestRun], None]] = []  # the suite's cleanup(): unregister clients

    # conditions ------------------------------------------------------------------------
    def check(self, ok: bool, message: str, *, ref: str = "", warning: bool = False) -> bool:
        """callAndContinueOnFailure: record a FAILURE (or WARNING) when ``ok`` is false."""
        if not ok:
            self.findings.append(Finding("WARNING" if warning else "FAILURE", message, ref))
        return bool(ok)

    def warn(self, message: str, *, ref: str = "") -> None:
        self.findings.append(Finding("WARNING", message, ref))

    def require(self, ok: object, message: str, *, ref: str = "") -> None:
        """callAndStopOnFailure."""
        if not ok:
            self.fail(message, ref=ref)

    def fail(self, message: str, *, ref: str = "") -> NoReturn:
        self.findings.append(Finding("FAILURE", message, ref))
        raise Stop(message)

    def note(self, message: str) -> None:
        """Informational (the suite's INFO/SUCCESS log lines); shown with --verbose."""
        self.notes.append(message)

    @property
    def status(self) -> Status:
        severities = {f.severity for f in self.findings}
        if "FAILURE" in severities:
            return Status.FAILED
        return Status.WARNING if "WARNING" in severities else Status.PASSED


ModuleFunction = Callable[[TestRun], None]


@dataclass(frozen=True)
class ModuleSpec:
    """A test module: its official name (``oidcc-…``) or a local extension (``jp-…``)."""

    name: str
    plan: str
    variant: str
    function: ModuleFunction = field(compare=False)
    official: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} [{self.variant}]" if self.variant else self.name


REGISTRY: list[ModuleSpec] = []


def module(name: str, *, plan: str, variant: str = "", official: bool = True) -> Callable[[ModuleFunction],
                                                                                              ModuleFunction]:
    """Register a module function under its official name (several variants may share one)."""

    def register(function: ModuleFunction) -> ModuleFunction:
        REGISTRY.append(ModuleSpec(name, plan, variant, function, official))
        return function

    return register


@dataclass
class Outcome:
    spec: ModuleSpec
    status: Status
    findings: list[Finding]
    notes: list[str]
    seconds: float


def execute(spec: ModuleSpec, env: Environment) -> Outcome:
    run = TestRun(spec, env)
    started = time.monotonic()
    try:
        spec.function(run)
    except Stop:
        pass
    except Exception as exc:  # a crash in a module (or an unexpected answer) is a failure
        run.findings.append(Finding("FAILURE", f"unexpected {type(exc).__name__}: {exc}"))
        run.notes.append(traceback.format_exc())
    for cleanup in run.cleanups:
        try:
            cleanup(run)
        except Exception as exc:  # cleanup failures only warn, as in the official suite
            run.findings.append(Finding("WARNING", f"cleanup failed: {type(exc).__name__}: {exc}"))
    return Outcome(spec, run.status, run.findings, run.notes, time.monotonic() - started)
