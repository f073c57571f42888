"""The durable job store (SQLite). All SQL of Switchboard lives in this package."""

from engine.store.db import StoreError
from engine.store.store import (
    Completion,
    GateRefused,
    LeaseLost,
    NewAttempt,
    NewOutbox,
    NewReview,
    ParentUpdate,
    ReviewStats,
    Stats,
    Store,
)

__all__ = [
    "Completion", "GateRefused", "LeaseLost", "NewAttempt", "NewOutbox", "NewReview", "ParentUpdate",
    "ReviewStats",
    "Stats", "Store", "StoreError",
]
