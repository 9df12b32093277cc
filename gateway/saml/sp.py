"""The Service Provider: pysaml2 configured for Entra, plus the checks pysaml2 leaves out.

What pysaml2 7.5 does for us: parse the Response, verify every signature
with ``xmlsec1`` against the certificates of the IdP metadata (never the ones
in the message), require a signature per ``want_*_signed``, check the time
windows, the audience (exact match only), the status, and InResponseTo
against the ids we pass.

What it does not do (measured on pysaml2 7.5 with Entra-shaped responses;
tests/test_saml_acs.py keeps each case refused), done here before it runs: refuse DTDs, entities and comments; pin the assertion and signatures
in place against signature wrapping; allow only the configured algorithms;
require every subject confirmation to be bearer with our ACS URL as
Recipient (pysaml2 skips the Recipient check unless given ``conv_info``);
check Destination, Issuer, and the time windows with reason codes; accept
Entra's ``spn:`` audience. The view then binds InResponseTo to the browser
and keeps the replay cache, both in the database.

pysaml2's client also remembers every person whose response it parsed
(``Saml2Client.users``, an in-memory dict never pruned) and keeps request
state for its own logout; the clients built here get stores that keep
nothing, so memory does not grow with the number of people signing in.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import shutil
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field

import saml2
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, md
from saml2.cache import Cache
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.extension import algsupport
from saml2.metadata import entity_descriptor
from saml2.validate import valid_instance

from ..errors import ConfigError
from ..settings import SIGNATURE_ALGORITHMS
from .claims import with_site_claims
from .errors import ASK_ADMIN, SamlRejection
from .metadata import IdpInfo, MetadataStore
from .pysaml2_crypto import (
    PLACEHOLDER_BACKEND,
    InProcessBackend,
    check_seam,
    fast_path,
    install,
    install_schema_validation,
)
from .verify import self_test
from .xmlguard import SAML, SAMLP, check_structure, safe_parse

log = logging.getLogger("gateway.saml")

BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


def _t(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def parse_instant(value: str | None) -> dt.datetime | None:
    """xs:dateTime as sent by Entra (7 fractional digits included); naive means UTC."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise SamlRejection("malformed", "The sign-in message has an invalid time.", detail=value) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


class _NoIdentityCache(Cache):
    """pysaml2's identity cache (``Saml2Client.users``), keeping nothing.

    By default every ``parse_authn_request_response`` stores the person's
    NameID, attributes and session in an in-memory dict that is never pruned,
    so a long-running process grows with every distinct user. The gateway
    keeps who signed in in its own sessions table, and never asks pysaml2
    for a cached identity (no attribute queries, no pysaml2 logout).
    """

    def set(self, name_id, entity_id, info, *args, **kwargs):  # noqa: A003 - pysaml2's name
        return None


class _NoState(MutableMapping):
    """pysaml2's request state (``Saml2Client.state``), keeping nothing.

    pysaml2 writes to it only for its own logout and attribute queries, which
    the gateway does not use; request ids live in the ``saml_requests`` table.
    """

    def __getitem__(self, key):
        raise KeyError(key)

    def __setitem__(self, key, value):
        return None

    def __delitem__(self, key):
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


@dataclass(frozen=True)
class VerifiedAssertion:
    """What the gateway takes from a response that passed every check."""

    assertion_id: str
    issuer: str
    name_id: str
    name_id_format: str | None
    session_index: str | None
    in_response_to: str | None
    expires_at: dt.datetime  # until when the assertion id stays in the replay cache
    attributes: dict[str, list[str]] = field(default_factory=dict)
    relay_state: str | None = None


class ServiceProvider:
    """One per app: settings, the IdP profile, the metadata store and pysaml2 clients."""

    def __init__(self, registry, settings, profile):
        self.registry = registry
        self.settings = settings
        self.saml = settings.saml
        # The profile as this site maps it: saml.claims.<field> over its claim map.
        self.profile = with_site_claims(profile, self.saml.claims)
        base = settings.gateway.base_url
        self.entity_id = settings.sp_entity_id
        self.acs_url = base + "/saml/acs"
        self.slo_url = base + "/saml/slo"
        self.metadata_url = base + "/saml/metadata"
        allowed = self.saml.allowed_signature_algorithms
        self.allowed_signature_uris = {SIGNATURE_ALGORITHMS[n][0] for n in allowed}
        self.allowed_digest_uris = {SIGNATURE_ALGORITHMS[n][1] for n in allowed}
        # Sign our own messages with the strongest RSA algorithm allowed (Entra
        # verifies RSA-SHA256 only).
        self.sign_alg, self.digest_alg = SIGNATURE_ALGORITHMS["rsa-sha256"]
        self.store = MetadataStore(
            registry,
            self.saml.idp_metadata,
            self.saml.metadata_refresh,
            default=profile.default_metadata,
        )
        self.crypto_backend = self.saml.crypto_backend
        self.xmlsec = shutil.which("xmlsec1")
        self.verifier = None
        if self.crypto_backend == "xmlsec1":
            if not self.xmlsec:
                raise ConfigError(
                    "saml: crypto_backend = xmlsec1 needs the xmlsec1 program; install xmlsec1 or use inprocess"
                )
        else:
            try:
                check_seam()
                self_test()
            except RuntimeError as exc:
                raise ConfigError(f"saml: the in-process signature verifier fails its self-test: {exc}") from None
            self.verifier = InProcessBackend(self.allowed_signature_uris, self.allowed_digest_uris)
            install_schema_validation()
        self._clients: dict[tuple[str, str], Saml2Client] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ pysaml2

    def pysaml2_config(self, idp: IdpInfo | None, entity_id: str | None = None) -> SPConfig:
        signed = self.saml.require_signed
        sp = {
            "endpoints": {
                "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)],
                "single_logout_service": [(self.slo_url, BINDING_HTTP_REDIRECT)],
            },
            "allow_unsolicited": self.saml.allow_idp_initiated,
            # Never signed: Entra accepts unsigned AuthnRequests, and enforcing
            # signed ones in Entra breaks My Apps and the "Test" button (Microsoft:
            # https://learn.microsoft.com/en-us/entra/identity/enterprise-apps/howto-enforce-signed-saml-authentication).
            # pysaml2 would also sign them with RSA-SHA1.
            "authn_requests_signed": False,
            # Our LogoutRequests are signed (RSA-SHA256) by slo.redirect_url
            # when saml.key_file is set; pysaml2 does not send them.
            "logout_requests_signed": bool(self.saml.key_file),
            # Entra signs the assertion by default, not the Response ("Sign SAML assertion" in
            # https://learn.microsoft.com/en-us/entra/identity/enterprise-apps/certificate-signing-options).
            "want_response_signed": signed in ("response", "both"),
            "want_assertions_signed": signed in ("assertion", "both"),
            "want_assertions_or_response_signed": signed == "either",
            "only_use_keys_in_metadata": True,
            # Without this Entra's objectidentifier, tenantid, groups... vanish.
            "allow_unknown_attributes": True,
            "name_id_format_allow_create": False,
        }
        config = {
            "entityid": entity_id or self.entity_id,
            "service": {"sp": sp},
            "accepted_time_diff": self.saml.clock_skew,
            "signing_algorithm": self.sign_alg,
            "digest_algorithm": self.digest_alg,
            "delete_tmpfiles": True,
        }
        if self.crypto_backend == "xmlsec1":
            config["xmlsec_binary"] = self.xmlsec
        else:
            config["crypto_backend"] = PLACEHOLDER_BACKEND
        if self.saml.key_file and self.saml.cert_file:
            config["key_file"] = self.saml.key_file
            config["cert_file"] = self.saml.cert_file
        if idp is not None:
            config["metadata"] = {"inline": [idp.xml]}
        loaded = SPConfig()
        loaded.load(config)
        return loaded

    def client(self, idp: IdpInfo, entity_id: str | None = None) -> Saml2Client:
        key = (idp.xml, entity_id or self.entity_id)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    # A new metadata copy replaces the clients built for the old one.
                    self._clients = {k: v for k, v in self._clients.items() if k[0] == idp.xml}
                    client = Saml2Client(
                        self.pysaml2_config(idp, entity_id),
                        identity_cache=_NoIdentityCache(),
                        state_cache=_NoState(),
                    )
                    if self.verifier is not None:
                        install(client, self.verifier)
                    self._clients[key] = client
        return client

    def idp(self) -> IdpInfo:
        info = self.store.current()
        if info is None:
            raise SamlRejection(
                "idp_metadata_unavailable",
                "Sign-in is not available: the gateway has no usable metadata from the identity provider.",
                detail=self.store.last_error or "",
                status=503,
                hint=ASK_ADMIN,
            )
        return info

    def sp_metadata(self) -> str:
        """The SP metadata, saying only what the gateway accepts.

        pysaml2's algorithm-support extension would list what xmlsec1 can do
        (MD5, SHA-1, DSA...): the extension lists saml.allowed_signature_algorithms
        instead (SAML V2.0 Metadata Profile for Algorithm Support).
        ``WantAssertionsSigned`` is true unless saml.require_signed is
        ``response`` (metadata has no attribute for a signed Response): under
        ``either`` the IdP is asked for what Entra does by default.
        """
        config = self.pysaml2_config(None)
        config.xmlsec_binary = None
        descriptor = entity_descriptor(config)
        descriptor.extensions = md.Extensions()
        for uri in sorted(self.allowed_digest_uris):
            descriptor.extensions.add_extension_element(algsupport.DigestMethod(algorithm=uri))
        for uri in sorted(self.allowed_signature_uris):
            descriptor.extensions.add_extension_element(algsupport.SigningMethod(algorithm=uri))
        wanted = "false" if self.saml.require_signed == "response" else "true"
        descriptor.spsso_descriptor.want_assertions_signed = wanted
        valid_instance(descriptor)
        return descriptor.to_string({"xs": "http://www.w3.org/2001/XMLSchema"}).decode("utf-8")

    # ------------------------------------------------------------ sign-in

    def authn_request(self, *, force_authn: bool = False) -> tuple[str, str]:
        """(request id, IdP URL with the HTTP-Redirect AuthnRequest).

        ``force_authn``: ask the IdP to authenticate the person again rather
        than answer from its own session (``ForceAuthn="true"``; Entra then
        prompts for credentials): the admin console's fresh sign-in before a
        sensitive action, and switching to another account.
        """
        idp = self.idp()
        client = self.client(idp)
        extra = {"force_authn": "true"} if force_authn else {}
        # No RequestedAuthnContext: Entra answers AADSTS75011 for MFA users.
        request_id, info = client.prepare_for_authenticate(
            entityid=idp.entity_id, binding=BINDING_HTTP_REDIRECT, sign=False, **extra
        )
        location = dict(info["headers"])["Location"]
        return request_id, location

    def check_response(
        self, saml_response: str, now: dt.datetime, solicited_by: str | None = None, *, root=None
    ) -> VerifiedAssertion:
        """Everything that does not need the database; raise SamlRejection on the first failure.

        ``solicited_by`` is the InResponseTo that the caller found bound to
        this browser (or None for an unsolicited response). ``root``: the
        caller's ``safe_parse`` of this very response, so it is parsed once.
        """
        if root is None:
            root = safe_parse(self.decode(saml_response))
        structure = check_structure(root, self.allowed_signature_uris, self.allowed_digest_uris)
        idp = self.idp()
        self._check_status(root)
        assertion = structure.assertion
        if assertion is None:
            raise SamlRejection("no_assertion", "The identity provider's answer holds no assertion.")
        self._check_signed(structure)
        self._check_issuers(root, assertion, idp)
        self._check_destination(root)
        in_response_to = root.get("InResponseTo")
        if in_response_to != solicited_by:
            raise SamlRejection("in_response_to", "This answer does not belong to the sign-in this browser started.")
        expires_at = self._check_subject(assertion, now, in_response_to)
        expires_at = max(expires_at, self._check_conditions(assertion, now))
        audience = self._check_audience(assertion)

        client = self.client(idp, audience)
        outstanding = {in_response_to: "/"} if in_response_to else {}
        try:
            if self.verifier is not None:
                with fast_path(message_validated=structure.schema_checked):
                    response = client.parse_authn_request_response(
                        saml_response, BINDING_HTTP_POST, outstanding=outstanding
                    )
            else:
                response = client.parse_authn_request_response(
                    saml_response, BINDING_HTTP_POST, outstanding=outstanding
                )
        except saml2.response.StatusError as exc:  # pragma: no cover - refused above with the message
            raise SamlRejection("idp_status", "The identity provider refused the sign-in.", detail=str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any pysaml2 failure is a refusal, never a traceback
            raise self._pysaml2_rejection(exc) from None
        if response is None or response.assertion is None:
            raise SamlRejection("response_invalid", "The identity provider's answer could not be verified.")
        verified = response.assertion
        if verified.id != assertion.get("ID"):  # pragma: no cover - guaranteed by check_structure
            raise SamlRejection("assertion_mismatch", "The identity provider's answer could not be verified.")
        return self._extract(verified, idp, in_response_to, expires_at)

    def decode(self, saml_response: str) -> bytes:
        try:
            return base64.b64decode("".join(saml_response.split()), validate=True)
        except ValueError:
            raise SamlRejection("malformed", "The sign-in message is not valid base64.") from None

    @staticmethod
    def peek_in_response_to(xml: bytes) -> str | None:
        """InResponseTo of a response, read before the full checks (they run anyway)."""
        root = safe_parse(xml)
        return root.get("InResponseTo")

    # ------------------------------------------------------------ the checks

    def _check_status(self, root) -> None:
        status = root.find(_t(SAMLP, "Status"))
        code = status.find(_t(SAMLP, "StatusCode")) if status is not None else None
        value = code.get("Value") if code is not None else None
        if value == STATUS_SUCCESS:
            return
        sub = code.find(_t(SAMLP, "StatusCode")) if code is not None else None
        message = status.findtext(_t(SAMLP, "StatusMessage")) if status is not None else None
        detail = f"{value} / {sub.get('Value') if sub is not None else '-'}: {message or ''}"
        shown = "The identity provider refused the sign-in."
        if message:
            # Entra's StatusMessage carries the AADSTS code the admin needs.
            shown += f" It said: {message.strip()[:500]}"
        raise SamlRejection("idp_status", shown, detail=detail, status=403, hint=ASK_ADMIN)

    def _check_signed(self, structure) -> None:
        required = self.saml.require_signed
        ok = {
            "assertion": structure.assertion_signed,
            "response": structure.response_signed,
            "either": structure.assertion_signed or structure.response_signed,
            "both": structure.assertion_signed and structure.response_signed,
        }[required]
        if not ok:
            raise SamlRejection(
                "signature_missing",
                f"The identity provider's answer is not signed as required (saml.require_signed = {required}).",
                status=403,
                hint=ASK_ADMIN,
            )

    def _check_issuers(self, root, assertion, idp: IdpInfo) -> None:
        issuers = [assertion.findtext(_t(SAML, "Issuer"))]
        response_issuer = root.find(_t(SAML, "Issuer"))
        if response_issuer is not None:
            issuers.append(response_issuer.text)
        for issuer in issuers:
            if (issuer or "").strip() != idp.entity_id:
                raise SamlRejection(
                    "issuer",
                    "The answer comes from an identity provider this gateway does not trust.",
                    detail=f"issuer {issuer!r}, expected {idp.entity_id!r}",
                    status=403,
                    hint=ASK_ADMIN,
                )

    def _check_destination(self, root) -> None:
        destination = root.get("Destination")
        if destination is not None and destination != self.acs_url:
            raise SamlRejection(
                "destination",
                "The answer was addressed to another site.",
                detail=f"Destination {destination!r}, expected {self.acs_url!r}",
            )

    def _skewed(self, now: dt.datetime, not_before, not_on_or_after, what: str) -> None:
        skew = dt.timedelta(seconds=self.saml.clock_skew)
        if not_before is not None and now + skew < not_before:
            raise SamlRejection(
                "not_yet_valid",
                "The answer is not valid yet; check the clocks of this server and the identity provider.",
                detail=f"{what} NotBefore {not_before.isoformat()}, now {now.isoformat()}",
            )
        if not_on_or_after is not None and now - skew >= not_on_or_after:
            raise SamlRejection(
                "expired",
                "The answer has expired.",
                detail=f"{what} NotOnOrAfter {not_on_or_after.isoformat()}, now {now.isoformat()}",
            )

    def _check_subject(self, assertion, now, in_response_to) -> dt.datetime:
        subject = assertion.find(_t(SAML, "Subject"))
        if subject is None or not (subject.findtext(_t(SAML, "NameID")) or "").strip():
            raise SamlRejection("no_subject", "The answer does not say who signed in.")
        confirmations = subject.findall(_t(SAML, "SubjectConfirmation"))
        if not confirmations:
            raise SamlRejection("subject_confirmation", "The answer has no subject confirmation.")
        latest = None
        for confirmation in confirmations:
            if confirmation.get("Method") != BEARER:
                raise SamlRejection(
                    "subject_confirmation_method",
                    "The answer uses a subject confirmation method other than bearer.",
                    detail=str(confirmation.get("Method")),
                )
            data = confirmation.find(_t(SAML, "SubjectConfirmationData"))
            if data is None:
                raise SamlRejection("subject_confirmation", "The answer's subject confirmation has no data.")
            if data.get("Recipient") != self.acs_url:
                raise SamlRejection(
                    "recipient",
                    "The answer was issued for another site.",
                    detail=f"Recipient {data.get('Recipient')!r}, expected {self.acs_url!r}",
                )
            if data.get("InResponseTo") is not None and data.get("InResponseTo") != in_response_to:
                raise SamlRejection("in_response_to", "The answer's parts disagree about which sign-in they answer.")
            not_on_or_after = parse_instant(data.get("NotOnOrAfter"))
            if not_on_or_after is None:
                raise SamlRejection("expired", "The answer's subject confirmation has no expiry.")
            self._skewed(now, parse_instant(data.get("NotBefore")), not_on_or_after, "SubjectConfirmationData")
            latest = not_on_or_after if latest is None else max(latest, not_on_or_after)
        return latest + dt.timedelta(seconds=self.saml.clock_skew)

    def _check_conditions(self, assertion, now) -> dt.datetime:
        conditions = assertion.find(_t(SAML, "Conditions"))
        if conditions is None:
            raise SamlRejection("audience", "The answer does not say which site it is for.")
        not_on_or_after = parse_instant(conditions.get("NotOnOrAfter"))
        self._skewed(now, parse_instant(conditions.get("NotBefore")), not_on_or_after, "Conditions")
        if not_on_or_after is None:
            return now
        return not_on_or_after + dt.timedelta(seconds=self.saml.clock_skew)

    def _check_audience(self, assertion) -> str:
        """Every AudienceRestriction must name us, as the entity id or Entra's ``spn:`` form."""
        conditions = assertion.find(_t(SAML, "Conditions"))
        restrictions = conditions.findall(_t(SAML, "AudienceRestriction"))
        accepted = (self.entity_id, "spn:" + self.entity_id)
        chosen = None
        for restriction in restrictions:
            audiences = [(a.text or "").strip() for a in restriction.findall(_t(SAML, "Audience"))]
            matching = [a for a in accepted if a in audiences]
            if not matching:
                raise SamlRejection(
                    "audience",
                    "The answer was issued for another application; check the Identifier (Entity ID) in Entra.",
                    detail=f"audiences {audiences}, expected {self.entity_id!r}",
                    status=403,
                    hint=ASK_ADMIN,
                )
            chosen = chosen or matching[0]
        if chosen is None:
            raise SamlRejection("audience", "The answer does not say which application it is for.")
        # pysaml2 compares the audience with its entity id exactly, so it gets
        # the form that the assertion uses.
        return chosen

    def _pysaml2_rejection(self, exc: Exception) -> SamlRejection:
        name = exc.__class__.__name__
        text = f"{name}: {exc}"[:2000]
        if name in ("SignatureError", "IncorrectlySigned", "MissingKey", "BadSignature") or "ignature" in text:
            return SamlRejection(
                "signature_invalid",
                "The answer's signature does not verify with the identity provider's certificates.",
                detail=text,
                status=403,
            )
        return SamlRejection("response_invalid", "The identity provider's answer could not be verified.", detail=text)

    def _extract(self, assertion, idp: IdpInfo, in_response_to, expires_at) -> VerifiedAssertion:
        attributes: dict[str, list[str]] = {}
        for statement in assertion.attribute_statement or ():
            for attribute in statement.attribute or ():
                values = [v.text.strip() for v in attribute.attribute_value or () if v.text and v.text.strip()]
                attributes.setdefault(attribute.name, []).extend(values)
        session_index = None
        for statement in assertion.authn_statement or ():
            session_index = session_index or statement.session_index
        name_id = assertion.subject.name_id
        return VerifiedAssertion(
            assertion_id=assertion.id,
            issuer=idp.entity_id,
            name_id=(name_id.text or "").strip(),
            name_id_format=name_id.format,
            session_index=session_index,
            in_response_to=in_response_to,
            expires_at=expires_at,
            attributes=attributes,
        )
