"""The study store: Optuna's schema plus tuner's ``tuner_`` tables in one database."""

from tuner.store.sql import DEFAULT_URL, Store, resolve_url, safe_url

__all__ = ["DEFAULT_URL", "Store", "resolve_url", "safe_url"]
