"""Test modules by plan; importing this package registers them all (framework.REGISTRY)."""

from conformance.modules import basic, config, dynamic, extras, fapi2, logout, request_objects  # noqa: F401
