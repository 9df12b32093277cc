"""SAML 2.0 Service Provider for Microsoft Entra ID (and any IdP profile).

``includeme`` picks the IdP profile named by ``saml.idp_profile`` among the
``gateway_idp_profiles()`` registrations, builds the :class:`ServiceProvider`
(no network or database work: the IdP metadata loads on first use), adds the
routes and views, and registers the readiness check and the certificate
expiry warning that ``/readyz`` and ``gateway CONFIG check`` run.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..plugins import collect
from .errors import SamlRejection
from .metadata import expiry_warnings
from .sp import ServiceProvider

__all__ = ["SamlRejection", "ServiceProvider", "choose_profile"]


def choose_profile(registry, settings):
    profiles = collect(registry.pm.hook.gateway_idp_profiles(), "IdP profile")
    name = settings.saml.idp_profile
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none (enable the entra plugin in gateway.plugins)"
        raise ConfigError(f'saml.idp_profile: no enabled plugin registers the IdP profile "{name}"; known: {known}')
    profile = profiles[name]
    if not settings.saml.idp_metadata and profile.default_metadata is None:
        pattern = profile.metadata_url_pattern or "a file path or an https URL"
        raise ConfigError(f'saml.idp_metadata: required for the IdP profile "{name}" (for example {pattern})')
    return profile


def includeme(config):
    registry = config.registry
    settings = registry.gateway_settings
    provider = ServiceProvider(registry, settings, choose_profile(registry, settings))
    registry.saml_sp = provider

    def idp_metadata_ready(request):
        problem, _warnings = provider.store.status()
        return problem

    def idp_metadata_warnings(request):
        _problem, warnings = provider.store.status()
        return warnings + expiry_warnings(provider.store.info)

    registry.readiness_checks["idp_metadata"] = idp_metadata_ready
    registry.warning_checks["idp_metadata"] = idp_metadata_warnings

    config.add_route("home", "/")
    config.add_route("whoami", "/whoami")
    config.add_route("logout", "/logout")
    config.add_route("saml.login", "/saml/login")
    config.add_route("saml.acs", "/saml/acs")
    config.add_route("saml.metadata", "/saml/metadata")
    config.add_route("saml.slo", "/saml/slo")
    config.scan(".views")
