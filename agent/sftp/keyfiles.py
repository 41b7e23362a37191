"""Where OpenSSH's key files live for the length of one transfer: under the agent's state
directory, cleared at start of whatever a crash left behind."""

from __future__ import annotations

import os
import shutil

KEY_DIR = "ssh"  # under the agent's state directory


def key_dir(state_dir: str) -> str:
    return os.path.join(state_dir, KEY_DIR)


def clear_leftover_keys(state_dir: str) -> None:
    """Key files of transfers cut short by a crash; called at agent start."""
    shutil.rmtree(key_dir(state_dir), ignore_errors=True)
