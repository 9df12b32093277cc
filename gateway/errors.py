"""The gateway's own exceptions, in one place."""


class ConfigError(SystemExit):
    """A bad setting, plugin or file: start-up stops with one readable line.

    It derives from SystemExit on purpose: raised from the app factory under
    ``pserve`` (or from the CLI), the interpreter prints just the message and
    exits with status 1 instead of dumping a traceback at the deployer.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
