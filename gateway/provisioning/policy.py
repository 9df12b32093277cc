"""The shipped provisioning policy (trylast): it follows ``provisioning.mode``.

A site plugin that implements ``gateway_provisioning_decide`` answers before
this one and may return None to fall back to it.
"""

from __future__ import annotations

from gateway import hookimpl
from gateway.interfaces import Decision

NOT_ASSIGNED = (
    "You are not assigned to this application. Ask your administrator to assign"
    " you to it in Microsoft Entra ID, then try again."
)
DEACTIVATED = "Your account is deactivated. Ask your administrator to reactivate it."
SCIM_DISABLED = (
    "SCIM is disabled: provisioning.mode is first_login, so users are created at their first"
    " sign-in. Add scim to provisioning.mode to provision users over SCIM."
)


class ModePolicy:
    """Allow known active users; create unknown ones only in ``first_login`` mode."""

    def __init__(self, modes: frozenset[str]):
        self.modes = modes

    @hookimpl(trylast=True)
    def gateway_provisioning_decide(self, identity, user, source):
        if source in ("admin", "cli"):
            return Decision.allow()  # an admin's reactivation: the admin decided
        if source == "scim":
            if "scim" not in self.modes:
                return Decision.deny(SCIM_DISABLED)
            return Decision.create() if user is None else Decision.allow()
        if user is not None:
            return Decision.allow() if user.get("active", True) else Decision.deny(DEACTIVATED)
        if "first_login" in self.modes:
            return Decision.create()
        return Decision.deny(NOT_ASSIGNED)
