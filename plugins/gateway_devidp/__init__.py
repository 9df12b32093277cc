"""Development IdP: an Entra look-alike inside the gateway, for development.ini only."""
