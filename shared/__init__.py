"""Definitions both the controller and the agent use: protocol models, errors, names."""
