"""A test sign-in's report: every check of a SAML response, and what a sign-in would do.

:meth:`ServiceProvider.check_response` stops at the first failure, which is
right for a sign-in and too little for an admin setting up Entra. Here every
check runs on its own (the same methods of the SP where one exists, so the
rules cannot drift apart) and says what it saw and expected: the signature,
its algorithms and the certificate that verified it, the issuer, the
audience, the recipient and destination, the time window against
``saml.clock_skew``, InResponseTo, replay. Then the claims as the IdP sent
them, the identity the IdP profile maps them to, each attribute transform's
output in order, the stored user they match and by which key, and what the
provisioning policy would decide and why. Finally the SP's own
``check_response`` gives the verdict, so the report never passes a response
that a sign-in would refuse.

Nothing is written: no user, session, replay-cache entry or event. The
caller (:mod:`gateway.saml.testsignin`) marks the test request answered.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

from ..db.models import SeenAssertion
from ..interfaces import HookContext
from ..provisioning.policy import DEACTIVATED
from ..provisioning.profile import apply_transforms, authority, merge, profile_from_saml, profile_from_scim
from ..provisioning.signin import NO_ACCOUNT, SUBJECT_TAKEN, find_user, identity_from_claims, user_as_dict
from ..settings import SIGNATURE_ALGORITHMS
from .errors import SamlRejection
from .fixes import likely_fix
from .xmlguard import DS, SAML, check_structure, safe_parse

log = logging.getLogger("gateway.saml.diagnose")

_ALL_SIGNATURES = {sig for sig, _ in SIGNATURE_ALGORITHMS.values()}
_ALL_DIGESTS = {digest for _, digest in SIGNATURE_ALGORITHMS.values()}
_SIGNATURE_NAMES = {sig: name.upper() for name, (sig, _) in SIGNATURE_ALGORITHMS.items()}


@dataclass
class Check:
    """One check: ``outcome`` is ``pass``, ``fail`` or ``skip`` (could not run: an earlier check failed)."""

    key: str
    label: str
    outcome: str
    detail: str = ""
    reason: str | None = None
    fix: dict | None = None


@dataclass
class Report:
    verdict: str = "failed"  # "passed" when a real sign-in with this response would succeed
    summary: str = ""
    reason: str | None = None
    message: str | None = None
    detail: str | None = None
    checks: list[Check] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)
    claims_verified: bool = False
    name_id: str | None = None
    name_id_format: str | None = None
    issuer: str | None = None
    identity: dict | None = None
    transforms: list[dict] = field(default_factory=list)
    match: dict | None = None
    decision: dict | None = None

    def as_json(self) -> dict:
        return asdict(self)


def _t(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


class Diagnosis:
    """Runs the checks of one response; :func:`diagnose` is the entry point."""

    def __init__(self, request, provider, saml_response: str, now: dt.datetime, in_response_to: str | None):
        self.request = request
        self.provider = provider
        self.saml_response = saml_response
        self.now = now
        self.in_response_to = in_response_to
        self.report = Report()
        self.expected = _expected(request.registry)

    # ------------------------------------------------------------ bookkeeping

    def check(self, key: str, label: str, run) -> bool:
        """Run ``run()`` (returns the detail text, raises SamlRejection); record the outcome."""
        try:
            detail = run() or ""
        except SamlRejection as exc:
            fix = likely_fix(exc.code, exc.detail, exc.message, self.expected)
            shown = exc.message + (f" ({exc.detail})" if exc.detail else "")
            self.report.checks.append(Check(key, label, "fail", shown, exc.code, asdict(fix) if fix else None))
            return False
        self.report.checks.append(Check(key, label, "pass", detail))
        return True

    def skip(self, key: str, label: str, why: str) -> None:
        self.report.checks.append(Check(key, label, "skip", why))

    # ------------------------------------------------------------ the run

    def run(self) -> Report:
        provider = self.provider
        state: dict[str, Any] = {}

        def decode():
            state["xml"] = provider.decode(self.saml_response)
            state["root"] = safe_parse(state["xml"])
            return f"{len(state['xml'])} bytes of XML without DTD, entities, comments or processing instructions"

        if not self.check("message", "Message is well-formed, safe XML", decode):
            return self.finish()
        root = state["root"]
        self.report.issuer = (root.findtext(_t(SAML, "Issuer")) or "").strip() or None

        def structure():
            # Every algorithm the gateway knows, so that the algorithm check
            # below can say which one was used even when it is not allowed.
            state["structure"] = check_structure(root, _ALL_SIGNATURES, _ALL_DIGESTS)
            where = [
                w
                for w, signed in (
                    ("the Response", state["structure"].response_signed),
                    ("the Assertion", state["structure"].assertion_signed),
                )
                if signed
            ]
            return "One assertion, in its place; signatures on " + (" and ".join(where) or "nothing")

        if not self.check("structure", "Structure (no signature wrapping)", structure):
            return self.finish()
        structure_ = state["structure"]
        self.check("algorithms", "Signature and digest algorithms", lambda: self._algorithms(root))
        status_ok = self.check("status", "Status is Success", lambda: provider._check_status(root) or "Success")
        assertion = structure_.assertion
        if assertion is None:
            if status_ok:
                self.check(
                    "assertion",
                    "The response holds an assertion",
                    lambda: _raise(SamlRejection("no_assertion", "The identity provider's answer holds no assertion.")),
                )
            for key, label in (("signature", "Signature"), ("issuer", "Issuer"), ("audience", "Audience")):
                self.skip(key, label, "No assertion to check.")
            return self.finish()

        self.check(
            "signed",
            f"Signed as required (saml.require_signed = {provider.saml.require_signed})",
            lambda: provider._check_signed(structure_) or "Yes",
        )
        self.check(
            "signature",
            "Signature verifies with the IdP metadata's certificates",
            lambda: self._signature(state["xml"], root, structure_),
        )
        self.check("issuer", "Issuer is the IdP of the metadata", lambda: self._issuer(root, assertion))
        self.check("destination", "Destination is this gateway's ACS", lambda: self._destination(root))
        self.check("recipient", "Recipient is this gateway's ACS", lambda: self._recipient(assertion))
        self.check(
            "in_response_to", "InResponseTo answers this test's request", lambda: self._in_response_to(root, assertion)
        )
        self.check(
            "time", f"Time window, allowing {provider.saml.clock_skew} s of clock skew", lambda: self._time(assertion)
        )
        self.check("audience", "Audience is this gateway's Identifier", lambda: self._audience(assertion))
        self.check("replay", "Not used before (replay)", lambda: self._replay(assertion))

        self._claims(assertion)
        self._verdict()
        if self.report.identity is not None:
            self._provisioning()
        return self.finish()

    def finish(self) -> Report:
        report = self.report
        failed = [c for c in report.checks if c.outcome == "fail"]
        if failed and report.verdict == "passed":  # pragma: no cover - the SP's check would have refused
            report.verdict = "failed"
        if report.verdict != "passed" and report.reason is None and failed:
            first = failed[0]
            report.reason, report.message = first.reason, first.detail
        if report.verdict == "passed":
            report.summary = "Every check passed: a sign-in with this response would be accepted."
        elif report.reason:
            report.summary = f"A sign-in with this response would be refused ({report.reason})."
        return report

    # ------------------------------------------------------------ checks

    def _algorithms(self, root) -> str:
        seen = []
        for signature in root.iter(_t(DS, "Signature")):
            method = signature.find(f"{_t(DS, 'SignedInfo')}/{_t(DS, 'SignatureMethod')}")
            digest = signature.find(f"{_t(DS, 'SignedInfo')}/{_t(DS, 'Reference')}/{_t(DS, 'DigestMethod')}")
            sig_alg = method.get("Algorithm") if method is not None else None
            digest_alg = digest.get("Algorithm") if digest is not None else None
            if sig_alg not in self.provider.allowed_signature_uris:
                raise SamlRejection(
                    "signature_algorithm",
                    "The IdP signed with an algorithm this gateway does not accept (see saml.allowed_signature_algorithms).",
                    detail=str(sig_alg),
                )
            if digest_alg not in self.provider.allowed_digest_uris:
                raise SamlRejection(
                    "digest_algorithm",
                    "The IdP used a digest algorithm this gateway does not accept (see saml.allowed_signature_algorithms).",
                    detail=str(digest_alg),
                )
            seen.append(f"{_SIGNATURE_NAMES.get(sig_alg, sig_alg)} with a {_digest_name(digest_alg)} digest")
        return "; ".join(dict.fromkeys(seen)) or "No signature"

    def _signature(self, xml: bytes, root, structure) -> str:
        """Verify each signature with each certificate of the metadata: which one signed."""
        idp = self.provider.idp()
        client = self.provider.client(idp)
        signed = []
        if structure.response_signed:
            signed.append(("Response", root, "urn:oasis:names:tc:SAML:2.0:protocol:Response"))
        if structure.assertion_signed:
            signed.append(("Assertion", structure.assertion, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"))
        if not signed:
            raise SamlRejection("signature_missing", "Nothing in the answer is signed.", status=403)
        text = xml.decode("utf-8")
        found = []
        for what, element, node_name in signed:
            verified_by = None
            for cert in idp.certs:
                if _verifies(client, text, cert.der, node_name, element.get("ID")):
                    verified_by = cert
                    break
            if verified_by is None:
                presented = element.find(f"{_t(DS, 'Signature')}//{_t(DS, 'X509Certificate')}")
                detail = f"the {what}'s signature verifies with none of the {len(idp.certs)} metadata certificates"
                if presented is not None and presented.text:
                    try:
                        der = base64.b64decode("".join(presented.text.split()))
                        detail += f"; it names certificate {hashlib.sha256(der).hexdigest()[:16]}"
                        known = {c.fingerprint for c in idp.certs}
                        detail += (
                            " (in the metadata)"
                            if hashlib.sha256(der).hexdigest()[:16] in known
                            else " (not in the metadata)"
                        )
                    except ValueError:
                        pass
                raise SamlRejection(
                    "signature_invalid",
                    "The answer's signature does not verify with the identity provider's certificates.",
                    detail=detail,
                    status=403,
                )
            days = (verified_by.not_after - self.now).days
            found.append(
                f"{what}: verified with certificate {verified_by.fingerprint} ({verified_by.subject},"
                f" valid until {verified_by.not_after:%Y-%m-%d}, {days} days left)"
            )
        return "; ".join(found)

    def _issuer(self, root, assertion) -> str:
        idp = self.provider.idp()
        self.provider._check_issuers(root, assertion, idp)
        return f"{idp.entity_id}"

    def _destination(self, root) -> str:
        self.provider._check_destination(root)
        destination = root.get("Destination")
        return destination if destination is not None else "Not stated (allowed)"

    def _recipient(self, assertion) -> str:
        subject = assertion.find(_t(SAML, "Subject"))
        recipients = []
        for confirmation in subject.findall(_t(SAML, "SubjectConfirmation")) if subject is not None else ():
            data = confirmation.find(_t(SAML, "SubjectConfirmationData"))
            recipient = data.get("Recipient") if data is not None else None
            if recipient != self.provider.acs_url:
                raise SamlRejection(
                    "recipient",
                    "The answer was issued for another site.",
                    detail=f"Recipient {recipient!r}, expected {self.provider.acs_url!r}",
                )
            recipients.append(recipient)
        if not recipients:
            raise SamlRejection("subject_confirmation", "The answer has no subject confirmation.")
        return recipients[0]

    def _in_response_to(self, root, assertion) -> str:
        answered = root.get("InResponseTo")
        if answered != self.in_response_to:
            raise SamlRejection(
                "in_response_to",
                "This answer does not belong to the sign-in this browser started.",
                detail=f"InResponseTo {answered!r}",
            )
        for data in assertion.iter(_t(SAML, "SubjectConfirmationData")):
            if data.get("InResponseTo") not in (None, answered):
                raise SamlRejection("in_response_to", "The answer's parts disagree about which sign-in they answer.")
        return f"{answered} (started in this browser)"

    def _time(self, assertion) -> str:
        """The Conditions and every SubjectConfirmationData window, as the SP checks them."""
        from .sp import parse_instant

        provider = self.provider
        conditions = assertion.find(_t(SAML, "Conditions"))
        if conditions is not None:
            provider._check_conditions(assertion, self.now)
        for data in assertion.iter(_t(SAML, "SubjectConfirmationData")):
            not_on_or_after = parse_instant(data.get("NotOnOrAfter"))
            if not_on_or_after is None:
                raise SamlRejection("expired", "The answer's subject confirmation has no expiry.")
            provider._skewed(self.now, parse_instant(data.get("NotBefore")), not_on_or_after, "SubjectConfirmationData")
        parts = [f"now {self.now:%Y-%m-%d %H:%M:%S} UTC"]
        issued = assertion.get("IssueInstant")
        if issued:
            offset = (parse_instant(issued) - self.now).total_seconds()
            parts.append(f"issued {issued} ({round(offset):+d} s from this server's clock)")
        if conditions is not None:
            parts.append(f"valid from {conditions.get('NotBefore')} until {conditions.get('NotOnOrAfter')}")
        return "; ".join(parts)

    def _audience(self, assertion) -> str:
        return self.provider._check_audience(assertion)

    def _replay(self, assertion) -> str:
        assertion_id = assertion.get("ID") or ""
        seen = self.request.dbsession.get(SeenAssertion, assertion_id[:256])
        if seen is not None and seen.expires_at > self.now:
            raise SamlRejection(
                "replay", "This sign-in answer was already used.", status=403, detail=f"assertion {assertion_id}"
            )
        return f"Assertion {assertion_id} was not used before"

    # ------------------------------------------------------------ what follows

    def _claims(self, assertion) -> None:
        report = self.report
        subject = assertion.find(_t(SAML, "Subject"))
        name_id = subject.find(_t(SAML, "NameID")) if subject is not None else None
        if name_id is not None:
            report.name_id = (name_id.text or "").strip() or None
            report.name_id_format = name_id.get("Format")
        attributes: dict[str, list[str]] = {}
        for attribute in assertion.iter(_t(SAML, "Attribute")):
            values = [(v.text or "").strip() for v in attribute.findall(_t(SAML, "AttributeValue"))]
            values = [v for v in values if v]
            name = attribute.get("Name") or ""
            report.claims.append(
                {
                    "name": name,
                    "friendly_name": attribute.get("FriendlyName"),
                    "values": values,
                    "maps_to": self.provider.profile.claim_map.get(name),
                }
            )
            attributes.setdefault(name, []).extend(values)
        self.attributes = attributes

    def _verdict(self) -> None:
        """The SP's own check of the whole response: what a sign-in would get."""
        report = self.report
        try:
            verified = self.provider.check_response(self.saml_response, self.now, solicited_by=self.in_response_to)
        except SamlRejection as exc:
            report.verdict, report.reason, report.message, report.detail = "failed", exc.code, exc.message, exc.detail
            if not any(c.outcome == "fail" for c in report.checks):
                fix = likely_fix(exc.code, exc.detail, exc.message, self.expected)
                report.checks.append(
                    Check(
                        "verification",
                        "Full verification (pysaml2)",
                        "fail",
                        exc.message + (f" ({exc.detail})" if exc.detail else ""),
                        exc.code,
                        asdict(fix) if fix else None,
                    )
                )
            if report.name_id is None:
                return
            name_id, attributes, issuer = report.name_id, self.attributes, report.issuer
        else:
            if any(c.outcome == "fail" for c in report.checks):  # replay: the SP leaves it to the view
                failed = next(c for c in report.checks if c.outcome == "fail")
                report.verdict, report.reason, report.message = "failed", failed.reason, failed.detail
            else:
                report.verdict = "passed"
            report.claims_verified = True
            report.checks.append(
                Check(
                    "verification", "Full verification (pysaml2)", "pass", f"Assertion {verified.assertion_id} verified"
                )
            )
            name_id, attributes, issuer = verified.name_id, verified.attributes, verified.issuer
        identity = identity_from_claims(self.provider.profile, name_id, attributes, issuer)
        self.identity = identity
        report.identity = {
            "subject": identity.subject,
            "user_name": identity.user_name,
            "email": identity.email,
            "groups": list(identity.groups),
            "profile": _plain(dict(identity.profile)),
        }

    def _provisioning(self) -> None:
        """The user the identity matches (and by which key), the profile it would get, the decision."""
        report, identity, request = self.report, self.identity, self.request
        dbsession = request.dbsession
        registry = request.registry
        match_on = registry.gateway_settings.provisioning.match_on
        tried = []
        user = key = taken = None
        for candidate in match_on:
            found = find_user(dbsession, identity, (candidate,))
            if found.user is not None:
                user, key = found.user, candidate
                tried.append({"key": candidate, "result": f"matches {found.user.user_name}"})
                break
            if found.taken is not None:
                taken = taken or found.taken
                tried.append({"key": candidate, "result": f"{found.taken.user_name}, linked to another IdP subject"})
            else:
                tried.append({"key": candidate, "result": "no match"})
        report.match = {
            "tried": tried,
            "key": key,
            "user": user_as_dict(user) if user is not None else None,
        }

        # The mapped profile, with each transform's output in order.
        saml = profile_from_saml(identity)
        provisioned_by = user.provisioned_by if user is not None else "saml"
        scim = profile_from_scim(user.scim_data if user is not None else None)
        merged = (
            merge(scim, saml) if authority(registry.gateway_settings, provisioned_by) == "scim" else merge(saml, scim)
        )
        steps: list = []
        context = {
            "subject": identity.subject,
            "tenant_id": (identity.profile or {}).get("tenant_id"),
            "groups": identity.groups,
        }
        try:
            apply_transforms(registry, merged, "saml", context, steps=steps)
        except Exception as exc:  # noqa: BLE001 - a failing transform is part of the report
            steps.append(("(error)", {"error": f"{exc.__class__.__name__}: {exc}"}))
        report.transforms = [{"name": "claims mapped and merged", "profile": _plain(merged), "changed": None}]
        previous = merged
        for name, profile in steps:
            report.transforms.append({"name": name, "profile": _plain(profile), "changed": _changed(previous, profile)})
            previous = profile

        # What sign_in() would decide, step by step, without doing it.
        if user is None and taken is not None:
            decision = {
                "action": "deny",
                "reason": SUBJECT_TAKEN,
                "why": f"{taken.user_name} matches by name or email but belongs to another IdP subject",
            }
        else:
            answer = registry.pm.hook.gateway_provisioning_decide(
                context=HookContext.of(request), identity=identity, user=user_as_dict(user, dbsession), source="saml"
            )
            modes = " ".join(sorted(registry.gateway_settings.provisioning.mode))
            if answer is None or answer.action == "deny":
                decision = {
                    "action": "deny",
                    "reason": answer.reason if answer else "No provisioning policy answered.",
                    "why": f"the provisioning policy refused (provisioning.mode = {modes})",
                }
            elif user is not None and not user.active:
                decision = {"action": "deny", "reason": DEACTIVATED, "why": "the user is deactivated"}
            elif user is None and answer.action != "create":
                decision = {
                    "action": "deny",
                    "reason": NO_ACCOUNT,
                    "why": "no stored user, and the policy does not create one",
                }
            elif user is None:
                decision = {
                    "action": "create",
                    "reason": "",
                    "why": f"no stored user matches, and provisioning.mode ({modes}) creates"
                    f" {identity.user_name} at the first sign-in",
                }
            else:
                link = "" if user.idp_subject else "; the IdP subject would be linked to the user"
                decision = {
                    "action": "allow",
                    "reason": "",
                    "why": f"signs in as {user.user_name}, matched by {key}{link}",
                }
        report.decision = decision
        if decision["action"] == "deny" and report.verdict == "passed":
            fix = likely_fix("denied", None, decision["reason"], self.expected)
            report.verdict, report.reason, report.message = "failed", "denied", decision["reason"]
            report.checks.append(
                Check(
                    "decision",
                    "Provisioning policy",
                    "fail",
                    decision["reason"],
                    "denied",
                    asdict(fix) if fix else None,
                )
            )


def diagnose(request, provider, saml_response: str, now: dt.datetime, in_response_to: str | None) -> Report:
    """The report of ``saml_response``, the answer to the test request ``in_response_to``."""
    return Diagnosis(request, provider, saml_response, now, in_response_to).run()


# ------------------------------------------------------------------ helpers


def _changed(before: dict, after: dict) -> list[str]:
    """The profile fields a transform changed (custom ones as ``custom.<name>``)."""
    changed = [k for k in after if k != "custom" and before.get(k) != after.get(k)]
    old, new = before.get("custom") or {}, after.get("custom") or {}
    return changed + [f"custom.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _raise(exc: Exception):
    raise exc


def _digest_name(uri: str | None) -> str:
    return (uri or "no").rsplit("#", 1)[-1].upper()


def _plain(value):
    """JSON-safe copy (tuples to lists, other objects to text) for the stored report."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _expected(registry):
    from .traces import expected

    return expected(registry)


def _verifies(client, xml_text: str, der: bytes, node_name: str, node_id: str | None) -> bool:
    """Whether the signature of element ``node_id`` verifies with certificate ``der`` (xmlsec1, via pysaml2)."""
    pem = "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der).decode("ascii") + "-----END CERTIFICATE-----\n"
    handle, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(pem)
        return bool(
            client.sec.verify_signature(xml_text, cert_file=path, cert_type="pem", node_name=node_name, node_id=node_id)
        )
    except Exception:  # noqa: BLE001 - pysaml2 raises for "does not verify"
        return False
    finally:
        os.unlink(path)
