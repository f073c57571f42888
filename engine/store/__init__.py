"""The durable job store (SQLite). All SQL of Switchboard lives in this package, one module per concern
(``store.py`` lists them)."""

from engine.errors import EngineRunning, GateRefused, LeaseLost, LostDatabase, StoreError
from engine.models import NewAttempt, NewOutbox, NewReview
from engine.store.completion import Completion, ParentUpdate
from engine.store.lease import EngineLease
from engine.store.stats import ReviewStats, Stats
from engine.store.store import Store

__all__ = [
    "Completion", "EngineLease", "EngineRunning", "GateRefused", "LeaseLost", "LostDatabase", "NewAttempt",
    "NewOutbox", "NewReview", "ParentUpdate", "ReviewStats",
    "Stats", "Store", "StoreError",
]
