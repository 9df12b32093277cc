"""SQL storage for SCIM users and groups (``scim.storage = sqlstore``), on SQLAlchemy."""
