"""The gateway built from settings or an ini, wrapped in webtest, and released after the test."""

from __future__ import annotations

from typing import Any


def registry_of(app) -> Any:
    """The Pyramid registry of a webtest app or of the gateway's WSGI app."""
    return getattr(app, "app", app).registry


def close_app(app) -> None:
    """Release what an app holds: database pools, the identity cache's listener, the log writer."""
    from gateway.serve import close

    close(getattr(app, "app", app))


def ini_settings(ini) -> dict[str, str]:
    """The ``[app:main]`` settings of an ini file, ``%(here)s`` and the like expanded."""
    from pyramid.paster import get_appsettings

    return dict(get_appsettings(str(ini)))


class AppMaker:
    """``maker(ini=None, **settings)``: a ``webtest.TestApp`` of the gateway; :meth:`close` releases them all.

    ``defaults`` are the settings every app starts from. With ``ini`` the
    ini's ``[app:main]`` settings are laid over them (so the database stays
    the test's own unless ``sqlalchemy.url`` is passed as a keyword, and the
    test IdP is trusted unless the ini names metadata). Keyword settings come
    last; a value of None removes the key. Dotted keys go through a dict:
    ``maker(**{"saml.clock_skew": "10"})``.

    ``storage`` names another SCIM storage backend (its plugin's name and the
    backend's, e.g. ``memstore``) for every app built: it takes the place of
    ``sqlstore`` in ``gateway.plugins`` (and of any ``scim.storage``), or is
    added when no backend is enabled, so one test runs on each backend.
    """

    def __init__(self, defaults: dict[str, str], host: str = "localhost", storage: str | None = None):
        self.defaults = defaults
        self.host = host
        self.storage = storage
        self.built: list[Any] = []

    def _with_storage(self, settings: dict) -> dict:
        if not self.storage:
            return settings
        plugins = [p for p in settings.get("gateway.plugins", "").split() if p not in ("sqlstore", self.storage)]
        return {**settings, "gateway.plugins": " ".join([*plugins, self.storage]), "scim.storage": self.storage}

    def __call__(self, ini=None, **overrides):
        import webtest

        from gateway import main

        settings = dict(self.defaults)
        if ini is not None:
            from_ini = ini_settings(ini)
            from_ini.pop("sqlalchemy.url", None)
            settings.update(from_ini)
        settings.update(overrides)
        settings = self._with_storage({k: v for k, v in settings.items() if v is not None})
        app = webtest.TestApp(main({}, **settings), extra_environ={"HTTP_HOST": self.host})
        self.built.append(app)
        return app

    def close(self) -> None:
        while self.built:
            close_app(self.built.pop())
