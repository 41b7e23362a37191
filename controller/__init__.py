"""Strata controller: API, data model, job engine and storage plugins."""

__version__ = "0.1.0"
