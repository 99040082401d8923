"""Every table, imported in one place so that migrations see the whole schema."""

from service.awards.models import Award, PointsEntry
from service.console.models import ConsoleLink, ConsoleSession
from service.controls.models import Counter, Exposure
from service.customers.models import Customer
from service.events.models import Event
from service.keys.models import ApiKey
from service.lib.db import Base
from service.projection.models import CustomerTimeline, FirstExposure, ProjectionState
from service.rules.models import RuleSetRecord
from service.webhooks.models import OutboxMessage

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Award",
    "ConsoleLink",
    "ConsoleSession",
    "Counter",
    "Customer",
    "CustomerTimeline",
    "Event",
    "Exposure",
    "FirstExposure",
    "OutboxMessage",
    "PointsEntry",
    "ProjectionState",
    "RuleSetRecord",
    "metadata",
]
