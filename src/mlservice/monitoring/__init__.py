"""Drift monitoring: the bundle's reference profile, the online window, offline file checks.

Importing this package loads numpy only (serving imports it); ``monitor_file`` and
``MonitorResult`` (pandas, pyarrow, the training metrics) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlservice.monitoring.profile import (
    PROFILE_FILE,
    ReferenceProfile,
    build_reference_profile,
    load_reference_profile,
    profile_json,
    save_reference_profile,
)
from mlservice.monitoring.window import PREDICTION_KEY, DriftWindow, psi

if TYPE_CHECKING:
    from mlservice.monitoring.offline import MonitorResult, monitor_file

__all__ = [
    "PREDICTION_KEY",
    "PROFILE_FILE",
    "DriftWindow",
    "MonitorResult",
    "ReferenceProfile",
    "build_reference_profile",
    "load_reference_profile",
    "monitor_file",
    "profile_json",
    "psi",
    "save_reference_profile",
]

_OFFLINE = frozenset({"MonitorResult", "monitor_file"})


def __getattr__(name: str) -> Any:
    if name in _OFFLINE:
        from mlservice.monitoring import offline

        return getattr(offline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
