"""Provisioning: who may sign in or be created, and how profiles are kept in sync."""
