"""Active learning for the annotation campaign: score-ranking strategies and per-client image leases."""

from lib.activelearning.leases import DEFAULT_LEASE_TIMEOUT_S, LEASES_FILE, Lease, LeaseBook, LeaseFilteredDatastore
from lib.activelearning.strategies import (DisagreementStrategy, DiversityStrategy, StrategyUnavailable,
                                           UncertaintyStrategy)

__all__ = ["DEFAULT_LEASE_TIMEOUT_S", "LEASES_FILE", "Lease", "LeaseBook", "LeaseFilteredDatastore", "DisagreementStrategy",
           "DiversityStrategy", "StrategyUnavailable", "UncertaintyStrategy"]
