"""pserve's HTTP server for the gateway: Granian, in one or more worker processes.

    [server:main]
    use = egg:entra-identity-gateway#granian
    listen = 0.0.0.0:6543
    workers = auto
    threads = 1

Why not waitress: with several requests in flight, one Python process
hands the GIL back and forth between waitress's I/O thread and its worker
threads on every socket and database call. On the 2-vCPU machines the
benchmarks run on, that tripled the server's CPU per SCIM user
(bench/scim_sync.py: 3.8 ms per user with one client, 14.5 ms with eight,
on the same code). Granian does the HTTP work in Rust, outside the GIL, so
the Python threads only run the app; and several worker processes use
several cores, which one Python process cannot.

Defaults, measured with bench/scim_sync.py on 2 CPUs: one single-threaded
worker per CPU, and at least two. Every extra process costs CPU of its own
(more sleeps and wake-ups, more database connections, colder caches): in
one run with the targets taking turns, four workers did 287 users/s on
PostgreSQL and 359 on SQLite where two did 307 and 407. A keep-alive
connection stays with the worker that accepted it and the kernel spreads
connections at random, so one worker can hold more clients than the
other; the second core then runs PostgreSQL and the client. A second
thread per worker lets one request run while another waits on PostgreSQL:
in 30 rounds of the group phase, taking turns, Entra's member PATCHes
queued less (pooled p99 32.5 against 41.3 ms, up to a fifth more PATCHes
per second), but users/s did not move, SQLite lost 8% of them, and forward-auth,
answered from memory, lost a fifth of its requests per second (26,000-29,000
against 34,000). So one thread stays the default; ``threads = 2`` suits a
PostgreSQL deployment whose load is mostly SCIM.

Each worker is a spawned process (not forked) that loads the app from the
ini itself (the copy pserve loaded first only checked the settings, and is
released before the workers start), so nothing is shared with the master:
no database connection, no thread, no lock.

On Linux each Granian worker opens its own listening socket (SO_REUSEPORT)
once its app is loaded, and the kernel spreads new connections over the
sockets that are listening. A worker that loaded a second sooner than the
others would take every connection made in that second, and keep-alive
clients keep them: bench/scim_sync.py's eight clients all landed on one of
four workers in a third of its runs, at half the throughput. So at start
each worker waits for the others to load (:class:`_StartLine`, at most
``START_WAIT`` seconds) before it listens.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import sys

from .errors import ConfigError

#: Seconds a worker gets to finish its requests when the server stops.
STOP_TIMEOUT = 10

#: Seconds a loaded worker waits, at start, for the others to load before it listens anyway.
START_WAIT = 30

#: Settings of ``[server:main]`` and their defaults.
DEFAULTS = {"listen": "127.0.0.1:6543", "workers": "auto", "threads": "1", "backlog": "1024", "app": "main"}


def granian(app, global_conf, **settings):
    """Paste server runner (``use = egg:entra-identity-gateway#granian``)."""
    from granian import Granian
    from granian.constants import Interfaces

    from .settings import expand_environment

    try:
        options = parse_server_settings(expand_environment(settings, section="server:main"))
    except ConfigError as error:
        # pserve turns a SystemExit from its server into "Exiting ..." on
        # stdout with status 0; a bad setting must fail like the app's own.
        sys.stdout.flush()
        sys.stderr.write(f"{error}\n")
        sys.stderr.flush()
        os._exit(1)
    ini = global_conf["__file__"]
    # ``pserve INI name=value`` variables, for the workers' own load of the ini.
    variables = {k: v for k, v in global_conf.items() if k not in ("__file__", "here")}
    close(app)
    # The workers' metric files start empty: what an earlier run counted is not this run's.
    from .metrics.directory import wipe

    wipe()
    # Workers are spawned, not forked. Granian starts a thread per worker
    # to watch it, so the master is multi-threaded when it starts the next
    # one (and when it replaces one), and a forked child could inherit a
    # lock another thread held (Python 3.12 and later warn). A spawned
    # worker is a fresh interpreter that loads the app from the ini, as
    # each worker did anyway; Python 3.14 spawns by default.
    multiprocessing.set_start_method("spawn", force=True)
    server = Granian(
        ini,
        address=options["host"],
        port=options["port"],
        interface=Interfaces.WSGI,
        workers=options["workers"],
        blocking_threads=options["threads"],
        backlog=options["backlog"],
        log_access=False,
        respawn_failed_workers=True,
        # A worker that has not stopped this long after SIGTERM is killed, so
        # a stop never hangs on one.
        workers_kill_timeout=STOP_TIMEOUT,
    )
    start_line = _StartLine(options["workers"])
    server.serve(target_loader=_WorkerApp(options["app"], variables, os.getpid(), start_line))


def parse_server_settings(settings: dict[str, str]) -> dict:
    """Check ``[server:main]``; a bad value stops start-up with one line naming it."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"server:main {unknown[0]}: unknown setting; known: {', '.join(DEFAULTS)}")
    values = {**DEFAULTS, **settings}
    listen = values["listen"].strip()
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'server:main listen: expected HOST:PORT such as 127.0.0.1:6543, got "{listen}"')
    workers = values["workers"].strip()
    if workers == "auto":
        worker_count = min(64, max(2, len(os.sched_getaffinity(0))))
    elif workers.isdigit() and 1 <= int(workers) <= 64:
        worker_count = int(workers)
    else:
        raise ConfigError(f'server:main workers: expected a number of processes from 1 to 64, or auto, got "{workers}"')
    app_name = values["app"].strip()
    if not app_name or any(c.isspace() for c in app_name):
        raise ConfigError(f'server:main app: expected the NAME of an [app:NAME] section, got "{app_name}"')
    parsed = {"host": host, "port": int(port), "workers": worker_count, "app": app_name}
    for key, low, high, meaning in (
        ("threads", 1, 256, "Python threads per worker"),
        ("backlog", 128, 65535, "queued connections"),
    ):
        text = values[key].strip()
        if not text.isdigit() or not low <= int(text) <= high:
            raise ConfigError(f'server:main {key}: expected {meaning} from {low} to {high}, got "{text}"')
        parsed[key] = int(text)
    return parsed


class _WorkerApp:
    """Loads the app in a worker process (a class, so a spawned worker can unpickle it)."""

    def __init__(self, name: str, variables: dict[str, str], master: int, start_line: _StartLine | None = None):
        self.name = name
        self.variables = variables
        self.master = master
        self.start_line = start_line

    def __call__(self, ini: str):
        from pyramid.paster import get_app, setup_logging

        _stop_with_master(self.master)
        setup_logging(ini, global_conf=self.variables)
        app = get_app(ini, self.name, options=self.variables)
        _hide_request_variables()
        # What loading made lives as long as the worker: out of the garbage
        # collector's sight, so its full collections stay short.
        gc.collect()
        gc.freeze()
        # CPython starts a full collection only once the objects that reached the oldest
        # generation since the last one number a quarter of those that one kept: here the
        # whole start-up heap (some 177,000), so garbage in reference cycles (requests, ORM
        # results) piled up there until 44,000 objects had (docs/benchmarks.md, Soak). One
        # more collection, of what is left unfrozen, starts that count from nothing.
        gc.collect()
        if self.start_line is not None:
            self.start_line.loaded()
        return app


class _StartLine:
    """Holds loaded workers back until all of them are loaded, once.

    Granian opens a worker's listening socket right after its app loads;
    waiting here makes the workers start listening together, so the first
    connections spread over all of them (see the module docstring). Only
    the first start waits: a worker that replaces a dead one, or a reload,
    finds the count reached and goes on at once. A shared counter, polled:
    a worker that dies while waiting leaves nothing behind that others wait on.
    """

    def __init__(self, workers: int):
        # The start method Granian uses for its workers (granian.server.mp): spawn, see granian().
        method = multiprocessing.get_start_method()
        context = multiprocessing.get_context(method if method in ("fork", "spawn") else "spawn")
        self.workers = workers
        self._loaded = context.Value("i", 0)

    def loaded(self) -> None:
        import time

        with self._loaded.get_lock():
            self._loaded.value += 1
        deadline = time.monotonic() + START_WAIT
        while self._loaded.value < self.workers:
            if time.monotonic() > deadline:
                import logging

                logging.getLogger(__name__).warning(
                    "worker %d listens before the others: they have not loaded after %d s", os.getpid(), START_WAIT
                )
                return
            time.sleep(0.005)


def _stop_with_master(master: int) -> None:
    """Never outlive the master, nor ignore its stop while loading.

    A worker must not take a SIGTERM that arrives while the app loads for
    anything but a stop (a forked one would inherit the master's Python
    handlers and drop it); the defaults apply until Granian installs the
    worker's handlers. And should the master die without stopping its workers
    (SIGKILL), Linux sends them SIGTERM.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != master:
        os._exit(0)  # the master is already gone


#: CGI request meta-variables (RFC 3875) and WSGI's own keys: never a process setting.
_REQUEST_VARIABLES = frozenset(
    {
        "AUTH_TYPE",
        "CONTENT_LENGTH",
        "CONTENT_TYPE",
        "GATEWAY_INTERFACE",
        "HTTPS",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_IDENT",
        "REMOTE_PORT",
        "REMOTE_USER",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "SCRIPT_NAME",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
    }
)


def _hide_request_variables() -> None:
    """Granian starts every request's environ from ``os.environ``: a process
    variable named like a request's (``HTTP_*``, ``REMOTE_USER``,
    ``CONTENT_TYPE`` ...) would read as something the client sent when it
    did not (``HTTP_PROXY`` as a ``Proxy:`` header, the "httpoxy" problem,
    or ``HTTP_AUTHORIZATION``). Remove them from this worker; proxy settings
    stay in force under their lower-case names, which urllib prefers anyway.
    """
    for name in [n for n in os.environ if n.startswith(("HTTP_", "wsgi.")) or n in _REQUEST_VARIABLES]:
        value = os.environ.pop(name)
        if name.startswith("HTTP_") and name.endswith("_PROXY"):
            os.environ.setdefault(name.lower(), value)


def close(app) -> None:
    """Release what an app holds: its database pools, its change listener, its log writer."""
    registry = getattr(app, "registry", None)
    if registry is None:
        return
    cache = getattr(registry, "identity_cache", None)
    if cache is not None:
        cache.close()
    # Its refresh thread stops before the pools it uses go.
    provider = getattr(registry, "saml_sp", None)
    if provider is not None:
        provider.store.close()
    # Its queued rows are written before the pools go.
    provisioning_log = getattr(registry, "provisioning_log", None)
    if provisioning_log is not None:
        provisioning_log.close()
    for name in ("db_engine", "db_read_engine"):
        engine = getattr(registry, name, None)
        if engine is not None:
            engine.dispose()
