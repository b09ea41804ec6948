"""Errors with stable codes.

Every error that reaches a user carries a code in ZStack's scheme (``SYS.1007``,
``HOST.1000``, ...), a one-line description, details that name the resource, the value and
the fix, and optionally the error that caused it. ``ZError.to_dict()`` gives the wire shape
of ZStack's ``ErrorCode``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CREATE_FAILED",
    "DELETE_FAILED",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "NOT_READY",
    "OPERATION_ERROR",
    "RESOURCE_NOT_FOUND",
    "STATE_CHANGE_FAILED",
    "TIMEOUT",
    "UNKNOWN_MESSAGE",
    "ConfigError",
    "StartupError",
    "ZError",
]

INTERNAL = "SYS.1000"
TIMEOUT = "SYS.1001"
CREATE_FAILED = "SYS.1002"
RESOURCE_NOT_FOUND = "SYS.1003"
DELETE_FAILED = "SYS.1004"
STATE_CHANGE_FAILED = "SYS.1005"
OPERATION_ERROR = "SYS.1006"
INVALID_ARGUMENT = "SYS.1007"
UNKNOWN_MESSAGE = "SYS.1008"
NOT_READY = "SYS.1010"


class ZError(Exception):
    """An error with a stable code, as ZStack's ``ErrorCode``.

    ``description`` says what went wrong in general terms; ``details`` names the resource, the
    value and, where there is one, the fix. ``cause`` is the error this one wraps, so a failure
    deep in a workflow reaches the API caller as a chain. ``location`` is where it happened
    (a flow step name, a service id).
    """

    def __init__(
        self,
        code: str,
        description: str,
        details: str = "",
        *,
        cause: ZError | None = None,
        location: str | None = None,
        opaque: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} {description}" + (f": {details}" if details else ""))
        self.code = code
        self.description = description
        self.details = details
        self.cause = cause
        self.location = location
        self.opaque = opaque

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: ``{"code", "description", "details", "cause"?, "location"?}``."""
        out: dict[str, Any] = {
            "code": self.code,
            "description": self.description,
            "details": self.details,
        }
        if self.location:
            out["location"] = self.location
        if self.opaque:
            out["opaque"] = self.opaque
        if self.cause is not None:
            out["cause"] = self.cause.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZError:
        cause = data.get("cause")
        return cls(
            data["code"],
            data.get("description", ""),
            data.get("details", ""),
            cause=cls.from_dict(cause) if cause else None,
            location=data.get("location"),
            opaque=data.get("opaque"),
        )

    @classmethod
    def wrap(cls, exc: BaseException, *, location: str | None = None) -> ZError:
        """``exc`` as a ZError: itself if it already is one, else ``SYS.1000`` naming it."""
        if isinstance(exc, ZError):
            return exc
        if isinstance(exc, TimeoutError):
            return cls(TIMEOUT, "operation timed out", str(exc) or type(exc).__name__,
                       location=location)
        return cls(INTERNAL, "internal error", f"{type(exc).__name__}: {exc}", location=location)

    def causes(self) -> list[ZError]:
        """This error and every cause below it, outermost first."""
        chain: list[ZError] = []
        err: ZError | None = self
        while err is not None:
            chain.append(err)
            err = err.cause
        return chain


class StartupError(Exception):
    """The node cannot start: a plugin, a flow chain or the database is wrong.

    The message is complete and meant for an operator: ``zstack-ctl`` prints it as it is,
    without a traceback.
    """


class ConfigError(StartupError):
    """``zstack.yaml`` or a ``ZSTACK_*`` environment variable is wrong."""
