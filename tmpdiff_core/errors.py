"""Every error tmpdiff raises on purpose.

Each class also derives from the builtin a caller would naturally catch (``ValueError`` for bad
input, ``FileNotFoundError`` for a missing schedule, ``RuntimeError`` for a missing kernel), so
``except ValueError`` keeps working while ``except TmpdiffError`` catches all of ours. Messages say
what failed, echo the offending value and name the next step.
"""

from __future__ import annotations


class TmpdiffError(Exception):
    """Base class of all tmpdiff errors."""


class UnknownPrecisionError(TmpdiffError, ValueError):
    """A precision name that no registered format carries."""


class ScheduleError(TmpdiffError, ValueError):
    """A schedule that is malformed, inconsistent or for another model/step grid."""


class ScheduleNotFoundError(TmpdiffError, FileNotFoundError):
    """A schedule name, path or Hub reference that resolves to nothing."""


class BackendUnavailableError(TmpdiffError, RuntimeError):
    """A forced backend that cannot run on this machine (no kernel, wrong GPU, missing package)."""


class PrepareError(TmpdiffError, ValueError):
    """A model that cannot be prepared as asked (nothing eligible, bad include/exclude patterns)."""


class HubError(TmpdiffError, RuntimeError):
    """A Hub operation that failed (offline and not cached, unreachable, refused upload)."""


class HubOfflineError(HubError, FileNotFoundError):
    """A Hub file that is not in the local cache while the Hub is offline or unreachable."""
