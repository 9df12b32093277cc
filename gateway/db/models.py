"""The gateway's tables (DESIGN.md "Data"); every schema change is an Alembic migration.

Types are chosen to behave the same on SQLite and PostgreSQL: ids are uuid
strings, times are UTC, JSON is JSONB on PostgreSQL. Case-insensitive
uniqueness (userName, group displayName) is a unique index on a lower-cased
``*_key`` column, which both databases can use for equality lookups.
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in Python, naive UTC in the database (SQLite has no zones)."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:
            value = value.replace(tzinfo=dt.UTC)
        return value


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A person; SCIM-provisioned, created at first sign-in, or both."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    user_name: Mapped[str] = mapped_column(sa.String(256))
    user_name_key: Mapped[str] = mapped_column(sa.String(256), unique=True)
    external_id: Mapped[str | None] = mapped_column(sa.String(256), index=True)
    idp_subject: Mapped[str | None] = mapped_column(sa.String(256), unique=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    display_name: Mapped[str | None] = mapped_column(sa.String(512))
    given_name: Mapped[str | None] = mapped_column(sa.String(256))
    family_name: Mapped[str | None] = mapped_column(sa.String(256))
    email: Mapped[str | None] = mapped_column(sa.String(320))
    email_key: Mapped[str | None] = mapped_column(sa.String(320), index=True)
    title: Mapped[str | None] = mapped_column(sa.String(256))
    department: Mapped[str | None] = mapped_column(sa.String(256))
    #: The SCIM resource as sent (core, enterprise and custom attributes).
    scim_data: Mapped[dict] = mapped_column(JSONType, default=dict)
    #: Custom profile attributes after mappings and transforms.
    attributes: Mapped[dict] = mapped_column(JSONType, default=dict)
    #: The profile fields the last SAML sign-in carried (before transforms),
    #: so a SCIM write can recompute the mapped profile (gateway/provisioning/profile.py).
    saml_profile: Mapped[dict | None] = mapped_column(JSONType, nullable=True)
    #: ``scim`` or ``saml``: who created the record.
    provisioned_by: Mapped[str] = mapped_column(sa.String(16), default="scim")
    #: Admin through ``gateway.admin_groups``, ``gateway.admin_users`` or a grant
    #: (gateway/provisioning/groups.py keeps it; the security policy reads it).
    is_admin: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: Who made this user an admin whatever their groups (``cli``, ``admin:<userName>``);
    #: kept through group syncs, unlike ``is_admin`` alone.
    admin_granted_by: Mapped[str | None] = mapped_column(sa.String(256))
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_sign_in_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    display_name: Mapped[str] = mapped_column(sa.String(512))
    display_name_key: Mapped[str] = mapped_column(sa.String(512), unique=True)
    external_id: Mapped[str | None] = mapped_column(sa.String(256), index=True)
    scim_data: Mapped[dict] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(sa.Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class GroupMember(Base):
    """One membership row per (group, user): large groups change a row at a time."""

    __tablename__ = "group_members"

    group_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScimToken(Base):
    """A SCIM bearer token; only its SHA-256 is stored."""

    __tablename__ = "scim_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The client address of that use (written with ``last_used_at``, at most once a minute).
    last_used_address: Mapped[str | None] = mapped_column(sa.String(64))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SsoSession(Base):
    """A browser session. The cookie holds a random id; the row is keyed by its hash."""

    __tablename__ = "sessions"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: Indexed: the dashboard counts the sign-ins of the last 24 hours by it.
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    name_id: Mapped[str | None] = mapped_column(sa.String(512))
    session_index: Mapped[str | None] = mapped_column(sa.String(256), index=True)
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))

    user: Mapped[User] = relationship(lazy="joined")


class SamlRequest(Base):
    """An AuthnRequest or LogoutRequest this gateway sent, bound to the browser that asked for it."""

    __tablename__ = "saml_requests"

    request_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    #: ``authn`` (answered at /saml/acs) or ``logout`` (answered at /saml/slo).
    kind: Mapped[str] = mapped_column(sa.String(16), default="authn", server_default="authn")
    browser_hash: Mapped[str] = mapped_column(sa.String(64))
    #: A local path, or an absolute URL of a forward-auth app (``gateway.forward_auth.urls``).
    next_path: Mapped[str] = mapped_column(sa.String(8192), default="/")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SeenAssertion(Base):
    """Replay cache: an assertion id is refused until its NotOnOrAfter passes."""

    __tablename__ = "seen_assertions"

    assertion_id: Mapped[str] = mapped_column(sa.String(256), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)


class IdpMetadata(Base):
    """The last good copy of the IdP metadata, and the last refresh attempt."""

    __tablename__ = "idp_metadata"

    source: Mapped[str] = mapped_column(sa.String(2048), primary_key=True)
    xml: Mapped[str | None] = mapped_column(sa.Text)
    fetched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(256))
    action: Mapped[str] = mapped_column(sa.String(64))
    target_type: Mapped[str] = mapped_column(sa.String(32))
    target_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    target_name: Mapped[str | None] = mapped_column(sa.String(512))
    source: Mapped[str] = mapped_column(sa.String(32))
    #: Indexed: the console's audit page finds a request's events by it.
    correlation_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    details: Mapped[dict] = mapped_column(JSONType, default=dict)


class SigninTrace(Base):
    """A refused sign-in or a test sign-in, kept ``admin.trace_retention_days``
    so that an admin can read why from the reference the person was shown."""

    __tablename__ = "signin_traces"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: ``refusal`` (a person was shown a refusal page) or ``test`` (a test sign-in).
    kind: Mapped[str] = mapped_column(sa.String(16))
    #: ``refused``, or for a test ``passed`` / ``failed``.
    outcome: Mapped[str] = mapped_column(sa.String(16))
    #: The reason code (``audience``, ``idp_status``...); None for a test that passed.
    reason: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[int | None] = mapped_column(sa.Integer)
    #: The sentence the person was shown, and the technical detail (log only until now).
    message: Mapped[str | None] = mapped_column(sa.Text)
    detail: Mapped[str | None] = mapped_column(sa.Text)
    path: Mapped[str | None] = mapped_column(sa.String(256))
    issuer: Mapped[str | None] = mapped_column(sa.String(1024))
    name_id: Mapped[str | None] = mapped_column(sa.String(512))
    #: The stored user the sign-in was about, when known (no foreign key: a trace outlives a deleted user).
    user_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    user_name: Mapped[str | None] = mapped_column(sa.String(256))
    #: The reference the refusal page shows.
    correlation_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))
    #: Who started a test sign-in (``admin:<userName>``).
    started_by: Mapped[str | None] = mapped_column(sa.String(256))
    #: The decoded SAML message, signature values and certificates shortened
    #: (None when ``admin.trace_keep_responses`` is off).
    response_xml: Mapped[str | None] = mapped_column(sa.Text)
    #: A test sign-in's report: every check, the claims, the mapped identity, the decision.
    report: Mapped[dict | None] = mapped_column(JSONType, nullable=True)


class ProvisioningLogEntry(Base):
    """One SCIM request as the client sent it and as it was answered; never a secret."""

    __tablename__ = "provisioning_log"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    #: The SCIM token's name; None when the request had no valid token.
    token_name: Mapped[str | None] = mapped_column(sa.String(128))
    method: Mapped[str] = mapped_column(sa.String(8))
    path: Mapped[str] = mapped_column(sa.String(512))
    status: Mapped[int] = mapped_column(sa.Integer)
    scim_type: Mapped[str | None] = mapped_column(sa.String(32))
    duration_ms: Mapped[float] = mapped_column(sa.Float)
    correlation_id: Mapped[str | None] = mapped_column(sa.String(64))
    remote_addr: Mapped[str | None] = mapped_column(sa.String(64))
    #: ``User`` or ``Group``, the id, and the userName / displayName the request carried.
    resource_type: Mapped[str | None] = mapped_column(sa.String(16))
    resource_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    resource_name: Mapped[str | None] = mapped_column(sa.String(256))
    #: The error's detail, shortened.
    error: Mapped[str | None] = mapped_column(sa.String(512))
    #: The request body, only when ``admin.provisioning_log_bodies`` is on (secrets removed).
    body: Mapped[dict | None] = mapped_column(JSONType, nullable=True)


class SigninTest(Base):
    """A test sign-in an admin started, or a one-time test link they made.

    A started test has the AuthnRequest's id (its ``saml_requests`` row has
    kind ``test``); a link has the SHA-256 of its secret until it is opened.
    """

    __tablename__ = "signin_tests"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    link_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    request_id: Mapped[str | None] = mapped_column(sa.String(128), unique=True)
    created_by: Mapped[str] = mapped_column(sa.String(256))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    #: When the link was opened (a link works once).
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: The trace holding the report, once the IdP answered.
    trace_id: Mapped[str | None] = mapped_column(sa.String(36))
