"""SCIM test support: fixtures for tokens and clients (owned by the SCIM work)."""
