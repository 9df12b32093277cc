"""Sign-in traces: every refused sign-in and every test sign-in, kept for the admin.

A person who is refused sees a reason code and a reference (the correlation
id); the admin pastes that reference into ``/admin/signins`` and reads the
trace: the sentence shown, the technical detail, issuer, NameID, the user,
the decoded message (signature values and certificates shortened, or not
kept at all with ``admin.trace_keep_responses = false``) and the likely fix
(:mod:`gateway.saml.fixes`).

The trace is written by a response callback, that is after pyramid_tm has
committed or aborted the request's transaction, in a short transaction of
its own: a refusal that rolls back what the request did still leaves its
trace, and on SQLite the write cannot wait on the request's own write lock.
A failure to write is logged and changes nothing of the response.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import threading
import time
import zlib
from typing import Any

import sqlalchemy as sa

from ..db.models import SigninTrace, SsoSession, new_id, utcnow
from .fixes import Expected, Fix, likely_fix
from .xmlguard import MAX_XML_BYTES, SAML, SAMLP, safe_parse

log = logging.getLogger("gateway.saml.traces")

#: Longest decoded message kept in a trace.
MAX_KEPT_CHARS = 200_000
#: Refusals a minute, per process, whose message is kept: /saml/acs is open to
#: anybody, and a flood of junk must not fill the database with 200 KB bodies
#: (the traces themselves are kept; past the budget without their message).
BODIES_PER_MINUTE = 120
#: request.environ key: (user id, userName) of the stored user a refused sign-in was about.
SIGNIN_USER = "gateway.signin_user"

#: Elements whose text is a signature value or key material, shortened in a kept message.
_SECRETISH = re.compile(
    r"(<(?:[\w.-]+:)?(SignatureValue|X509Certificate|Modulus|CipherValue|X509SKI)\b[^>]*>)([^<]*)(</(?:[\w.-]+:)?\2\s*>)"
)


def shorten_key_material(xml: str) -> str:
    """``xml`` with every signature value, certificate and key shortened to its ends."""

    def cut(match: re.Match) -> str:
        value = re.sub(r"\s+", "", match.group(3))
        if len(value) <= 24:
            return match.group(0)
        return f"{match.group(1)}{value[:12]}…{value[-8:]} ({len(value)} characters){match.group(4)}"

    return _SECRETISH.sub(cut, xml)


def indent_xml(xml: str) -> str:
    """One element per line, indented by depth: readable without parsing (the text may be malformed)."""
    out, depth = [], 0
    for token in re.findall(r"<[^>]*>|[^<]+", xml):
        if not token.startswith("<"):
            if token.strip():
                out[-1:] = [out[-1] + token.strip()] if out else [token.strip()]
            continue
        closing = token.startswith("</")
        if closing:
            depth = max(0, depth - 1)
            if out and not out[-1].lstrip().startswith("</") and re.match(r"\s*<[^/?!][^>]*[^/]>[^<]*$", out[-1]):
                out[-1] += token  # <a>text</a> on one line
                continue
        out.append("  " * depth + token)
        if not closing and not token.endswith("/>") and not token.startswith(("<?", "<!")):
            depth += 1
    return "\n".join(out)


def decoded_message(request) -> str | None:
    """The SAML message the request carried (POST or Redirect binding), decoded, or None."""
    for name in ("SAMLResponse", "SAMLRequest"):
        posted = request.POST.get(name) if request.method == "POST" else None
        raw = posted or request.GET.get(name)
        if not raw:
            continue
        try:
            data = base64.b64decode("".join(str(raw).split()) + "==", validate=False)
        except ValueError:
            return None
        if not posted:
            # HTTP-Redirect binding: raw DEFLATE; bounded against a zip bomb.
            try:
                inflater = zlib.decompressobj(-15)
                data = inflater.decompress(data, MAX_XML_BYTES)
            except zlib.error:
                pass
        return data[:MAX_XML_BYTES].decode("utf-8", errors="replace")
    return None


def identifiers(xml: str | None) -> dict[str, str | None]:
    """Issuer, NameID and the IdP's status message of a message, when it parses safely."""
    found: dict[str, str | None] = {"issuer": None, "name_id": None, "status_message": None}
    if not xml:
        return found
    try:
        root = safe_parse(xml.encode("utf-8"))
    except Exception:  # noqa: BLE001 - a message refused for its XML has no identifiers to read
        return found
    issuer = root.find(f"{{{SAML}}}Issuer")
    if issuer is None:
        issuer = root.find(f".//{{{SAML}}}Issuer")
    found["issuer"] = (issuer.text or "").strip()[:1024] or None if issuer is not None else None
    name_id = root.find(f".//{{{SAML}}}Subject/{{{SAML}}}NameID")
    if name_id is None:
        name_id = root.find(f"{{{SAML}}}NameID")  # a LogoutRequest
    found["name_id"] = (name_id.text or "").strip()[:512] or None if name_id is not None else None
    message = root.findtext(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusMessage")
    found["status_message"] = message.strip() if message else None
    return found


class _Budget:
    """At most ``per_minute`` takes in any calendar minute (per process)."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self.minute = -1
        self.used = 0
        self.lock = threading.Lock()

    def take(self) -> bool:
        minute = int(self.clock() // 60)
        with self.lock:
            if minute != self.minute:
                self.minute, self.used = minute, 0
            if self.used >= self.per_minute:
                return False
            self.used += 1
            return True


_bodies = _Budget(BODIES_PER_MINUTE)


def note_user(request, user_id: str | None, user_name: str | None) -> None:
    """Say which stored user a refused sign-in was about (its trace then shows on their page)."""
    request.environ[SIGNIN_USER] = (user_id, user_name)


def trace_values(
    request,
    *,
    kind: str,
    outcome: str,
    reason: str | None,
    message: str | None,
    detail: str | None,
    status: int | None,
    xml: str | None = None,
    **extra: Any,
) -> dict:
    """A trace row for this request; ``extra`` overrides any column."""
    keep = request.registry.gateway_settings.admin.trace_keep_responses
    if xml is None:
        xml = decoded_message(request)
    ids = identifiers(xml)
    user_id, user_name = request.environ.get(SIGNIN_USER, (None, None))
    values = {
        "id": new_id(),
        "at": utcnow(),
        "kind": kind,
        "outcome": outcome,
        "reason": reason,
        "status": status,
        "message": message,
        "detail": detail or None,
        "path": request.path[:256],
        "issuer": ids["issuer"],
        "name_id": ids["name_id"],
        "user_id": user_id,
        "user_name": (user_name or None) and user_name[:256],
        "correlation_id": request.correlation_id,
        "remote_addr": (request.client_addr or "")[:64] or None,
        "user_agent": (request.user_agent or "")[:512] or None,
        "started_by": None,
        "response_xml": shorten_key_material(xml)[:MAX_KEPT_CHARS] if keep and xml and _bodies.take() else None,
        "report": None,
    }
    values.update(extra)
    return values


def record_refusal(request, exc) -> None:
    """Keep the refusal ``exc`` (a SamlRejection) as a trace, once the request's transaction has ended."""
    try:
        values = trace_values(
            request,
            kind="refusal",
            outcome="refused",
            reason=exc.code,
            message=exc.message,
            detail=exc.detail,
            status=exc.status,
        )
    except Exception:  # noqa: BLE001 - the refusal page is shown whatever happens here
        log.warning("sign-in trace: could not describe refusal %s", getattr(exc, "code", "?"), exc_info=True)
        return
    write_after_response(request, values)


def write_after_response(request, values: dict) -> None:
    """Write the trace ``values`` after the request's transaction, in a transaction of its own."""

    def write(req, _response):
        registry = req.registry
        try:
            with registry.db_engine.begin() as connection:
                connection.execute(sa.insert(SigninTrace.__table__).values(**values))
        except Exception:  # noqa: BLE001 - a trace is bookkeeping: never a 500
            log.warning(
                "sign-in trace: could not write trace %s (reason=%s correlation_id=%s)",
                values.get("id"),
                values.get("reason"),
                values.get("correlation_id"),
                exc_info=True,
            )
            return
        from ..retention import retention

        retention(registry).maybe_prune()

    request.add_response_callback(write)


# ------------------------------------------------------------------ reading


def expected(registry) -> Expected:
    provider = registry.saml_sp
    return Expected(
        entity_id=provider.entity_id,
        acs_url=provider.acs_url,
        login_url=registry.gateway_settings.gateway.base_url + "/saml/login",
        metadata_source=provider.saml.idp_metadata,
    )


def fix_for(registry, trace) -> Fix | None:
    """The likely fix of a trace (computed when shown, so better advice reaches old traces)."""
    if trace.outcome == "passed":
        return None
    return likely_fix(trace.reason, trace.detail, trace.message, expected(registry))


def search(
    dbsession,
    q: str | None = None,
    *,
    kind: str | None = None,
    user_id: str | None = None,
    before: dt.datetime | None = None,
    limit: int = 50,
) -> list[SigninTrace]:
    """Traces, newest first. ``q``: a reference (correlation id), a reason code, a NameID or userName."""
    query = sa.select(SigninTrace).order_by(SigninTrace.at.desc(), SigninTrace.id).limit(limit)
    if q:
        q = q.strip()
        lowered = q.lower()
        query = query.where(
            sa.or_(
                SigninTrace.correlation_id == q,
                SigninTrace.id == q,
                SigninTrace.reason == lowered,
                sa.func.lower(SigninTrace.name_id) == lowered,
                sa.func.lower(SigninTrace.user_name) == lowered,
            )
        )
    if kind:
        query = query.where(SigninTrace.kind == kind)
    if user_id:
        query = query.where(SigninTrace.user_id == user_id)
    if before is not None:
        query = query.where(SigninTrace.at < before)
    return list(dbsession.scalars(query))


def traces_for_user(dbsession, user_id: str, limit: int = 20) -> list[SigninTrace]:
    """The user's traces, newest first (for their page in the console)."""
    return search(dbsession, user_id=user_id, limit=limit)


def signin_summary(dbsession, since: dt.datetime) -> tuple[int, list[tuple[str, int]]]:
    """(sign-ins, [(reason code, refusals)]) since ``since``, most frequent reason first.

    A sign-in is a session started (every successful sign-in starts one;
    ``sessions.created_at`` is indexed); a refusal is a refusal trace, policy
    denials included. Test sign-ins count as neither.
    """
    signed_in = dbsession.scalar(sa.select(sa.func.count()).where(SsoSession.created_at >= since)) or 0
    rows = dbsession.execute(
        sa.select(SigninTrace.reason, sa.func.count())
        .where(SigninTrace.at >= since, SigninTrace.kind == "refusal")
        .group_by(SigninTrace.reason)
    ).all()
    refusals = sorted(((reason or "unknown", count) for reason, count in rows), key=lambda r: (-r[1], r[0]))
    return signed_in, refusals
