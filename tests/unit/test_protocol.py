"""The protocol's declarations: every command the controller may call has a handler on
the agent, and a name can't be declared twice."""

from __future__ import annotations

import pytest

from agent.commands import HANDLERS
from shared.protocol.command import Command, declared
from shared.protocol.types import EmptyPayload


def test_every_declared_command_has_exactly_its_handler() -> None:
    assert set(HANDLERS) == set(declared())
    for name, handler in HANDLERS.items():
        assert handler.command is declared()[name]


def test_a_command_name_is_declared_once() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Command("host_info", EmptyPayload, EmptyPayload)
