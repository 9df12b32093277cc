"""The gateway's own exceptions, in one place."""


class ConfigError(Exception):
    """A bad setting, plugin or file: start-up stops with one readable line.

    An ordinary exception, so code that builds the app (tests, the CLI) can
    catch it; each entry point a deployer runs turns it into its one line and
    exit status 1: the ``gateway`` CLI, the app factory pserve loads
    (:func:`gateway.paste_app`) and the Granian runner (:mod:`gateway.serve`).
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
