"""open-iscsi's `iscsiadm`: interfaces, discovery, node settings, login and logout.

Its exit codes (`include/iscsi_err.h`) name the failure: a refused CHAP login is not an
unreachable portal. Every failure keeps the code `iscsi_login_failed` on the wire; the
classes tell them apart.
"""

from __future__ import annotations

from agent.executor import CommandFailed, Executor

TIMEOUT = 60

ISCSI_ERR_TRANS = 4  # the portal refused or dropped the connection
ISCSI_ERR_TRANS_TIMEOUT = 8  # no answer from the portal in time
ISCSI_ERR_SESS_EXISTS = 15
ISCSI_ERR_NO_OBJS_FOUND = 21  # e.g. no session to log out of
ISCSI_ERR_LOGIN_AUTH_FAILED = 24


class IscsiadmFailed(CommandFailed):
    default_code = "iscsi_login_failed"


class IscsiAuthFailed(IscsiadmFailed):
    """The target refused the login: CHAP credentials, or an initiator not granted."""


class IscsiPortalUnreachable(IscsiadmFailed):
    """No iSCSI conversation with the portal: refused, reset, or timed out."""


_ERRORS: dict[int, type[IscsiadmFailed]] = {
    ISCSI_ERR_LOGIN_AUTH_FAILED: IscsiAuthFailed,
    ISCSI_ERR_TRANS: IscsiPortalUnreachable,
    ISCSI_ERR_TRANS_TIMEOUT: IscsiPortalUnreachable,
}


async def _run(executor: Executor, *args: str, ok: tuple[int, ...] = (),
               redact: tuple[str, ...] = ()) -> None:
    result = await executor.run(["iscsiadm", *args], timeout=TIMEOUT, check=False,
                                redact=redact)
    rc = result.returncode
    if rc != 0 and rc not in ok:
        detail = result.stderr.strip() or f"exit code {rc}"
        raise _ERRORS.get(rc, IscsiadmFailed)(
            result, f"iscsiadm {' '.join(args[:4])} failed: {detail}")


def _node(target: str, portal: str, iface: str) -> list[str]:
    return ["-m", "node", "-T", target, "-p", portal, "-I", iface]


async def ensure_iface(executor: Executor, iface: str, initiator: str) -> None:
    """An iface record whose sessions log in as `initiator`: open-iscsi otherwise uses
    the name in /etc/iscsi/initiatorname.iscsi, whatever the target granted."""
    shown = await executor.run(["iscsiadm", "-m", "iface", "-I", iface], timeout=TIMEOUT,
                               check=False)
    if shown.returncode != 0:
        await _run(executor, "-m", "iface", "-I", iface, "-o", "new")
    await _run(executor, "-m", "iface", "-I", iface, "-o", "update",
               "-n", "iface.initiatorname", "-v", initiator)


async def discover(executor: Executor, portal: str, iface: str) -> None:
    """SendTargets discovery through `iface`: records the portal's targets as its nodes."""
    await _run(executor, "-m", "discovery", "-t", "sendtargets", "-p", portal, "-I", iface)


async def set_chap(executor: Executor, target: str, portal: str, iface: str, user: str,
                   password: str) -> None:
    """CHAP for the node's next login; the password never reaches the log."""
    for name, value, secret in (("node.session.auth.authmethod", "CHAP", False),
                                ("node.session.auth.username", user, False),
                                ("node.session.auth.password", password, True)):
        await _run(executor, *_node(target, portal, iface), "-o", "update", "-n", name, "-v", value,
                   redact=(value,) if secret else ())


async def login(executor: Executor, target: str, portal: str, iface: str) -> None:
    """A session that exists already counts as logged in."""
    await _run(executor, *_node(target, portal, iface), "--login", ok=(ISCSI_ERR_SESS_EXISTS,))


async def logout(executor: Executor, target: str, portal: str, iface: str) -> None:
    """No session to log out of counts as logged out."""
    await _run(executor, *_node(target, portal, iface), "--logout", ok=(ISCSI_ERR_NO_OBJS_FOUND,))
