"""The logging sections of an ini that tests and benchmarks write for ``pserve``."""

from __future__ import annotations

#: production.ini's line format.
TEXT_FORMAT = "%(asctime)s %(levelname)-5.5s [%(name)s] %(message)s"


def logging_sections(*, gateway_level: str | None = None, json: bool = False) -> str:
    """Warnings and errors to stderr; with ``gateway_level`` (``INFO``: the access log
    and sign-in lines) the gateway's own loggers from that level. Lines as
    production.ini writes them, or JSON lines (``gateway.logs.JsonFormatter``).
    ``logging_sections(gateway_level="INFO")`` is production.ini's own (a test keeps it so).
    """
    formatter = "json" if json else "generic"
    sections = [
        f"[loggers]\nkeys = root{', gateway' if gateway_level else ''}",
        "[handlers]\nkeys = console",
        f"[formatters]\nkeys = {formatter}",
        "[logger_root]\nlevel = WARN\nhandlers = console",
    ]
    if gateway_level:
        sections.append(f"[logger_gateway]\nlevel = {gateway_level}\nhandlers =\nqualname = gateway")
    sections.append(
        f"[handler_console]\nclass = StreamHandler\nargs = (sys.stderr,)\nlevel = NOTSET\nformatter = {formatter}"
    )
    if json:
        sections.append("[formatter_json]\nclass = gateway.logs.JsonFormatter")
    else:
        sections.append(f"[formatter_generic]\nformat = {TEXT_FORMAT}")
    return "\n\n".join(sections) + "\n"
