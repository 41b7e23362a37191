"""Strata host agent: executes the controller's storage commands on one host."""

__version__ = "0.1.0"
