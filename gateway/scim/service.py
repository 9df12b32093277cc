"""The SCIM core service: what a write means beyond storing it.

Views parse HTTP; this module validates, applies PATCHes, checks ETags,
asks the provisioning hook before a user is created, ends a deactivated or
deleted user's sessions, fires ``gateway_user_event`` and records the audit
trail, all in the request's transaction. It reaches data only through the
configured :class:`~gateway.scim.storage.ScimStorage`.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import audit
from ..events import fire_group, fire_user
from ..interfaces import GroupEvent, HookContext, Identity, UserEvent
from ..provisioning import refresh_admins_after_group_write, sync_profile_from_scim
from ..provisioning.recheck import MembershipChange, asks_again, group_names, membership_refusals, write_refusal
from ..sessions import end_sessions_for_user
from .errors import ScimError, bad_request, conflict, not_found
from .patch import adds_or_removes_members_only, apply_patch
from .resources import normalize
from .schemas import ENTERPRISE_USER, ResourceType
from .storage import Conflict, NotFound, Query, Record, ScimStorage, UnknownMembers, Unsupported

log = logging.getLogger(__name__)


def check_if_match(request, record: Record) -> None:
    """RFC 7232 If-Match against ``W/"<version>"``; 412 when it does not match."""
    header = request.headers.get("If-Match")
    if not header:
        return
    current = str(record.version)
    for tag in (t.strip() for t in header.split(",")):
        if tag == "*" or tag.removeprefix("W/").strip('"') == current:
            return
    raise ScimError(412, f'If-Match {header} does not match the current version W/"{current}"')


def _primary_email(data: dict) -> str | None:
    emails = [e for e in data.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    for email in emails:
        if email.get("primary") is True:
            return email["value"]
    for email in emails:
        if str(email.get("type", "")).lower() == "work":
            return email["value"]
    return emails[0]["value"] if emails else None


def identity_from(data: dict) -> Identity:
    name = data.get("name") or {}
    enterprise = data.get(ENTERPRISE_USER) or {}
    return Identity(
        subject=None,
        user_name=data.get("userName"),
        email=_primary_email(data),
        profile={
            "email": _primary_email(data),
            "given_name": name.get("givenName"),
            "family_name": name.get("familyName"),
            "display_name": data.get("displayName"),
            "title": data.get("title"),
            "department": enterprise.get("department"),
        },
    )


def changed_attributes(old: dict, new: dict) -> tuple[str, ...]:
    """Top-level attribute names (extension ones as ``urn:attr``) that differ."""
    changed = []
    for key in sorted(set(old) | set(new)):
        if key.startswith("urn:") and isinstance(old.get(key, {}), dict) and isinstance(new.get(key, {}), dict):
            inner_old, inner_new = old.get(key) or {}, new.get(key) or {}
            changed += [
                f"{key}:{k}" for k in sorted(set(inner_old) | set(inner_new)) if inner_old.get(k) != inner_new.get(k)
            ]
            if (key in old) != (key in new) and not inner_old and not inner_new:
                changed.append(key)  # an empty extension object added or removed
        elif old.get(key) != new.get(key):
            changed.append(key)
    return tuple(changed)


#: Longest values of the attributes the storage indexes (a UPN is at most 113).
LIMITS = {"userName": 256, "externalId": 256, "displayName": 256}


def check_limits(data: dict, kind: str) -> None:
    for name, limit in LIMITS.items():
        if name == "displayName" and kind != "Group":
            continue
        value = data.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise bad_request("invalidValue", f"{name} is longer than {limit} characters")


class ScimService:
    def __init__(self, request, token_name: str):
        self.request = request
        self.storage: ScimStorage = request.registry.scim_storage
        self.types: dict[str, ResourceType] = request.registry.scim_resource_types
        self.settings = request.registry.gateway_settings.scim
        self.actor = f"scim:{token_name}"

    # -------------------------------------------------------------- helpers

    def _audit(self, action: str, target_type: str, record_id: str | None, name: str | None, **details: Any) -> None:
        audit.record(
            self.request.dbsession,
            actor=self.actor,
            action=action,
            target_type=target_type,
            target_id=record_id,
            target_name=name,
            source="scim",
            correlation_id=self.request.correlation_id,
            details={k: v for k, v in details.items() if v not in (None, (), [])},
        )

    def _event(
        self, type_: str, user_id: str | None, user_name: str | None, changed: tuple[str, ...] = (), reason: str = ""
    ) -> None:
        fire_user(
            HookContext.of(self.request),
            UserEvent(
                type=type_,
                user_id=user_id,
                user_name=user_name,
                actor=self.actor,
                source="scim",
                correlation_id=self.request.correlation_id,
                changed=changed,
                reason=reason,
            ),
        )

    def _group_listeners(self) -> bool:
        """Whether any plugin needs membership diffs (they cost a read otherwise saved): a
        listener to group events, or a policy to ask again about the users they concern."""
        hook = self.request.registry.pm.hook
        return bool(
            hook.gateway_group_event.get_hookimpls()
            or hook.gateway_event_committed.get_hookimpls()
            or asks_again(self.request.registry)
        )

    def _group_event(self, type_: str, group_id: str, display_name: str | None, user_ids=(), changed=()) -> None:
        if type_ in ("members_added", "members_removed") and not user_ids:
            return
        fire_group(
            HookContext.of(self.request),
            GroupEvent(
                type=type_,
                group_id=group_id,
                display_name=display_name,
                actor=self.actor,
                source="scim",
                correlation_id=self.request.correlation_id,
                user_ids=tuple(user_ids),
                changed=tuple(changed),
            ),
        )

    def _member_ids(self, group_id: str) -> list[str]:
        record = self._storage(self.storage.get_group, group_id)
        return [m.value for m in (record.members if record is not None else ())]

    def _storage(self, call, *args, **kwargs):
        """Call the backend, turning its errors into SCIM errors."""
        try:
            return call(self.request, *args, **kwargs)
        except Conflict as exc:
            raise conflict(str(exc) or "a unique value is taken") from None
        except NotFound as exc:
            raise not_found(str(exc) or "not found") from None
        except UnknownMembers as exc:
            raise bad_request("invalidValue", f"no user with id {', '.join(sorted(exc.ids))}") from None
        except Unsupported as exc:
            raise bad_request("invalidFilter", str(exc)) from None

    # -------------------------------------------------------------- reads

    def get(self, kind: str, resource_id: str, *, with_members: bool = True) -> Record:
        if kind == "User":
            record = self._storage(self.storage.get_user, resource_id)
        else:
            record = self._storage(self.storage.get_group, resource_id, with_members=with_members)
        if record is None:
            raise not_found(f"{kind} {resource_id} not found")
        return record

    def query(self, kind: str, query: Query):
        call = self.storage.query_users if kind == "User" else self.storage.query_groups
        return self._storage(call, query)

    # -------------------------------------------------------------- users

    def create_user(self, body: Any) -> Record:
        data, _ = normalize(body, self.types["User"])
        check_limits(data, "User")
        decision = self.request.registry.pm.hook.gateway_provisioning_decide(
            context=HookContext.of(self.request), identity=identity_from(data), user=None, source="scim"
        )
        if decision is not None and decision.action == "deny":
            reason = decision.reason or "provisioning refused by policy"
            self._event("denied", None, data.get("userName"), reason=reason)
            raise ScimError(403, reason)
        record = self._storage(self.storage.create_user, data)
        # The mapped profile (authority, transforms) is kept by provisioning.
        sync_profile_from_scim(self.request, record.id, data, stored=record.stored_profile)
        self._audit("scim.user.create", "user", record.id, data["userName"], active=data.get("active", True))
        self._event("created", record.id, data["userName"])
        if data.get("active") is False:
            self._event("deactivated", record.id, data["userName"])
        return record

    def _locked_user(self, user_id: str) -> Record:
        record = self._storage(self.storage.get_user, user_id, for_update=True)
        if record is None:
            raise not_found(f"User {user_id} not found")
        check_if_match(self.request, record)
        return record

    def _write_user(self, old: Record, data: dict, action: str) -> Record:
        if data.get("userName") != old.data.get("userName") and not self.settings.allow_username_change:
            raise bad_request("mutability", "userName cannot be changed (scim.allow_username_change is off)")
        check_limits(data, "User")
        changed = changed_attributes(old.data, data)
        if not changed:
            return old
        user_name = data.get("userName")
        was_active, is_active = old.data.get("active", True) is not False, data.get("active", True) is not False
        refused = write_refusal(HookContext.of(self.request), old.id, old.data, data, identity_from)
        if refused is not None and not was_active:
            # A reactivation admits someone again: refused like a create, nothing written.
            self._event("denied", old.id, user_name, reason=refused)
            raise ScimError(403, refused)
        record = self._storage(self.storage.replace_user, old.id, data)
        sync_profile_from_scim(self.request, old.id, data, old.data)
        self._audit(action, "user", old.id, user_name, changed=list(changed))
        others = tuple(c for c in changed if c != "active")
        if others:
            self._event("updated", old.id, user_name, others)
        if was_active and not is_active:
            end_sessions_for_user(self.request.dbsession, old.id)
            self._event("deactivated", old.id, user_name)
        elif is_active and not was_active:
            self._event("reactivated", old.id, user_name)
        if refused is not None:
            # Stored all the same (the directory mirrors Entra); access ends.
            self._refused(old.id, user_name, refused)
        return record

    def _refused(self, user_id: str, user_name: str | None, reason: str) -> None:
        """The policy now refuses a user a write kept: their sessions end (and sign-ins ask it again)."""
        ended = end_sessions_for_user(self.request.dbsession, user_id)
        if ended:
            self._audit("scim.user.sessions_ended", "user", user_id, user_name, reason=reason, sessions=ended)
            self._event("denied", user_id, user_name, ("sessions",), reason=reason)

    def _recheck_members(self, change: MembershipChange) -> None:
        """After a group write: end the sessions of the users it concerns whom the policy now refuses."""
        for user_id, user_name, reason in membership_refusals(HookContext.of(self.request), change):
            self._refused(user_id, user_name, reason)

    def replace_user(self, user_id: str, body: Any) -> Record:
        old = self._locked_user(user_id)
        data, _ = normalize(body, self.types["User"])
        return self._write_user(old, data, "scim.user.replace")

    def patch_user(self, user_id: str, body: Any) -> Record:
        old = self._locked_user(user_id)
        result = apply_patch(old.data, body, self.types["User"])
        if not result.data.get("userName"):
            raise bad_request("mutability", "userName is required")
        return self._write_user(old, result.data, "scim.user.patch")

    def delete_user(self, user_id: str) -> None:
        old = self._locked_user(user_id)
        end_sessions_for_user(self.request.dbsession, user_id)
        self._storage(self.storage.delete_user, user_id)
        self._audit("scim.user.delete", "user", user_id, old.data.get("userName"))
        self._event("deleted", user_id, old.data.get("userName"))

    # -------------------------------------------------------------- groups

    def create_group(self, body: Any) -> Record:
        data, members = normalize(body, self.types["Group"])
        check_limits(data, "Group")
        record = self._storage(self.storage.create_group, data, members or [])
        self._audit("scim.group.create", "group", record.id, data["displayName"], members=len(members or []))
        refresh_admins_after_group_write(self.request, record.id, None, data)
        self._group_event("created", record.id, data["displayName"])
        self._group_event("members_added", record.id, data["displayName"], dict.fromkeys(members or []))
        self._recheck_members(
            MembershipChange(frozenset(), group_names(data), joined=tuple(dict.fromkeys(members or [])))
        )
        return record

    def _locked_group(self, group_id: str) -> Record:
        record = self._storage(self.storage.get_group, group_id, with_members=False, for_update=True)
        if record is None:
            raise not_found(f"Group {group_id} not found")
        check_if_match(self.request, record)
        return record

    def replace_group(self, group_id: str, body: Any) -> Record:
        old = self._locked_group(group_id)
        data, members = normalize(body, self.types["Group"])
        check_limits(data, "Group")
        if data != old.data:
            self._storage(self.storage.replace_group, group_id, data)
            self._group_event("updated", group_id, data["displayName"], changed=changed_attributes(old.data, data))
        # PUT replaces the whole resource: members not sent are removed.
        added, removed = self._change_members(group_id, [("set", members or [])])
        self._audit("scim.group.replace", "group", group_id, data["displayName"], members=len(members or []))
        refresh_admins_after_group_write(self.request, group_id, old.data, data)
        self._member_events(group_id, data["displayName"], added, removed)
        self._recheck_members(
            MembershipChange(
                group_names(old.data),
                group_names(data),
                tuple(added),
                tuple(removed),
                lambda: self._member_ids(group_id),
            )
        )
        return self.get("Group", group_id)

    def _member_events(self, group_id: str, display_name: str | None, added: list[str], removed: list[str]) -> None:
        self._group_event("members_added", group_id, display_name, added)
        self._group_event("members_removed", group_id, display_name, removed)

    def patch_group(self, group_id: str, body: Any) -> Record:
        """Apply a group PATCH; the group after it (members not loaded)."""
        rt = self.types["Group"]
        if "If-Match" not in self.request.headers and adds_or_removes_members_only(body, rt):
            return self._patch_members(group_id, apply_patch({}, body, rt).member_changes)
        # Anything else (an attribute change, a replace of all members,
        # If-Match) locks the group first.
        old = self._locked_group(group_id)
        result = apply_patch(old.data, body, rt)
        if not result.data.get("displayName"):
            raise bad_request("mutability", "displayName is required")
        check_limits(result.data, "Group")
        if result.data != old.data:
            self._storage(self.storage.replace_group, group_id, result.data)
            self._group_event(
                "updated", group_id, result.data.get("displayName"), changed=changed_attributes(old.data, result.data)
            )
        added, removed = self._change_members(group_id, result.member_changes)
        self._audit(
            "scim.group.patch",
            "group",
            group_id,
            result.data.get("displayName"),
            changed=list(changed_attributes(old.data, result.data)),
            members_added=len(added) or None,
            members_removed=len(removed) or None,
            members_replaced=any(c == "set" for c, _ in result.member_changes) or None,
        )
        refresh_admins_after_group_write(self.request, group_id, old.data, result.data)
        self._member_events(group_id, result.data.get("displayName"), added, removed)
        self._recheck_members(
            MembershipChange(
                group_names(old.data),
                group_names(result.data),
                tuple(added),
                tuple(removed),
                lambda: self._member_ids(group_id),
            )
        )
        return self.get("Group", group_id, with_members=False)

    def _patch_members(self, group_id: str, member_changes) -> Record:
        # Entra fills a group with PATCHes that only add or remove members,
        # several at once for one group. They need neither the group's data
        # nor a lock on it for the whole transaction: a membership is a unique
        # row (a racing add is a no-op), the storage refuses a group that does
        # not exist, and the version bump in the read below (the ETag) is the
        # only step that waits for the others.
        added, removed = self._change_members(group_id, member_changes)
        record = self.get("Group", group_id, with_members=False)
        self._audit(
            "scim.group.patch",
            "group",
            group_id,
            record.data.get("displayName"),
            changed=[],
            members_added=len(added) or None,
            members_removed=len(removed) or None,
        )
        refresh_admins_after_group_write(self.request, group_id, record.data, record.data)
        self._member_events(group_id, record.data.get("displayName"), added, removed)
        names = group_names(record.data)
        self._recheck_members(MembershipChange(names, names, tuple(added), tuple(removed)))
        return record

    def _change_members(self, group_id: str, member_changes) -> tuple[list[str], list[str]]:
        """Apply the changes in request order; (ids added, ids removed).

        A replacement of all members is counted as neither, unless a plugin
        listens to group events: then the members before it are read, so
        that its events name who came and who went.
        """
        added: dict[str, None] = {}
        removed: dict[str, None] = {}

        def note(into, out, ids):
            for user_id in ids:
                if user_id in out:
                    del out[user_id]  # added, then removed (or back): no net change
                else:
                    into[user_id] = None

        for change, ids in member_changes:
            if change == "add":
                note(added, removed, self._storage(self.storage.add_members, group_id, ids))
            elif change == "remove":
                note(removed, added, self._storage(self.storage.remove_members, group_id, ids))
            elif self._group_listeners():
                before = self._member_ids(group_id)
                self._storage(self.storage.set_members, group_id, ids)
                after = dict.fromkeys(ids)
                note(added, removed, [i for i in after if i not in set(before)])
                note(removed, added, [i for i in before if i not in after])
            else:
                self._storage(self.storage.set_members, group_id, ids)
        return list(added), list(removed)

    def delete_group(self, group_id: str) -> None:
        old = self._locked_group(group_id)
        # Its members lose it: read them first when a policy is to be asked about them.
        members = tuple(self._member_ids(group_id)) if asks_again(self.request.registry) else ()
        self._storage(self.storage.delete_group, group_id)
        self._audit("scim.group.delete", "group", group_id, old.data.get("displayName"))
        refresh_admins_after_group_write(self.request, group_id, old.data, None)
        self._group_event("deleted", group_id, old.data.get("displayName"))
        self._recheck_members(MembershipChange(group_names(old.data), frozenset(), left=members))
