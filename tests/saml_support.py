"""SAML test support: a real pysaml2 IdP with generated keys, and fixtures (owned by the SAML work)."""
