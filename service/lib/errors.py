"""One error hierarchy for the whole service, rendered as RFC 9457 problem+json.

Each error knows its HTTP status, a stable problem type and a short title.
Expected business outcomes (a conflicting replay, an unknown customer) are
errors of this hierarchy, never 500s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import msgspec

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:delight:problem:"


class FieldError(msgspec.Struct, frozen=True):
    """One thing wrong with the input, and where."""

    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class DelightError(Exception):
    """Base of every error a client can see."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, *, errors: Sequence[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug

    def to_problem(self, *, instance: str | None = None, request_id: str | None = None) -> Problem:
        return Problem(
            type=self.problem_type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            request_id=request_id,
            errors=self.errors,
        )

    def headers(self) -> dict[str, str]:
        return {}


class MalformedRequestError(DelightError):
    status = 400
    slug = "malformed-request"
    title = "Malformed request"


class ValidationError(DelightError):
    status = 422
    slug = "validation-error"
    title = "The request does not match the schema"


class RuleSetRefusedError(DelightError):
    """A rule set with errors, refused whole; ``errors`` holds each one as ``path:line`` and its message."""

    status = 422
    slug = "rule-set-refused"
    title = "The rule set was refused; the one in force stays"


class UnauthorizedError(DelightError):
    status = 401
    slug = "unauthorized"
    title = "A valid API key is required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="delight"'}


class ForbiddenError(DelightError):
    status = 403
    slug = "forbidden"
    title = "The API key lacks the scope this needs"


class NotFoundError(DelightError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ConflictError(DelightError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class EventConflictError(ConflictError):
    slug = "event-conflict"
    title = "An event with this event_id and other content already exists"


class AwardExpiredError(ConflictError):
    slug = "award-expired"
    title = "The award has expired"


class AwardAlreadyRedeemedError(ConflictError):
    slug = "award-already-redeemed"
    title = "The award was redeemed by another order"


class AwardNotRedeemableError(ConflictError):
    slug = "award-not-redeemable"
    title = "The award cannot be redeemed"


class InsufficientPointsError(ConflictError):
    slug = "insufficient-points"
    title = "The points balance does not cover the spend"


class PointsOrderConflictError(ConflictError):
    slug = "points-order-conflict"
    title = "This order already spent a different number of points"


class ServiceUnavailableError(DelightError):
    status = 503
    slug = "service-unavailable"
    title = "A backing service is unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ReplicaBehindError(ServiceUnavailableError):
    """The standby reports read did not replay, within the limit, what the primary had committed when asked."""

    slug = "replica-behind"
    title = "The reports replica is too far behind the primary"


class RateLimitedError(DelightError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class InternalError(DelightError):
    """Anything unexpected; the detail never leaks internals."""
