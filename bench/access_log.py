"""CPU time of a request with the access log (``logging.access``) off and on, in-process, as a ratio.

wrk against a server (bench/forward_auth.py) measures throughput, but on a
shared 2-vCPU machine its run-to-run noise is larger than what one log line
costs. This calls the gateway's WSGI app directly, in this process, and
measures CPU time per request: a forward-auth check of a signed-in user (the
fast path, as bench/forward_auth.py sends it) and ``GET /healthz`` (through
Pyramid). The app is built twice from the same settings, with the log off
and on; with it on, each line is formatted as production.ini formats it and
written to /dev/null. Rounds alternate between the two; the best round of
each is kept.

    .venv/bin/python bench/access_log.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
from configparser import ConfigParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import forward_auth  # noqa: E402 - the forward-auth benchmark's database, session and ini


def app_with(ini: Path, access: bool):
    import gateway

    parser = ConfigParser(interpolation=None)
    parser.read(ini)
    settings = dict(parser["app:main"])
    settings.pop("use", None)
    settings["logging.access"] = "true" if access else "false"
    return gateway.main({"here": str(ini.parent)}, **settings)


def caller(app, environ: dict):
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def call():
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO()
        body = app(env, start_response)
        if hasattr(body, "close"):
            body.close()
        return statuses[-1]

    return call


def cpu_per_call(call, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        call()
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    # As production.ini: the gateway's loggers at INFO, one line per record on a stream.
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - open for the whole run
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5.5s [%(name)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("gateway").setLevel(logging.INFO)

    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-access-"))
    ini, token = forward_auth.prepare_gateway(folder, f"sqlite:///{folder}/bench.sqlite", forward_auth.free_port())
    base = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }
    check = {
        **base,
        "PATH_INFO": "/auth",
        "HTTP_COOKIE": f"gateway_session={token}",
        "HTTP_X_ORIGINAL_URL": forward_auth.ORIGINAL_URL,
    }
    health = {**base, "PATH_INFO": "/healthz"}
    apps = {"off": app_with(ini, False), "on": app_with(ini, True)}
    calls = {
        (mode, what): caller(app, environ)
        for mode, app in apps.items()
        for what, environ in (("/auth", check), ("/healthz", health))
    }
    for call in calls.values():
        for _ in range(200):  # warm: the identity cache, the URL caches
            status = call()
        assert status.startswith("200"), status
    best = {key: float("inf") for key in calls}
    for _ in range(args.rounds):
        for key, call in calls.items():
            best[key] = min(best[key], cpu_per_call(call, args.requests))
    print(f"in-process, {args.requests} requests x {args.rounds} rounds, best round; CPU time per request")
    for what in ("/auth", "/healthz"):
        off, on = best[("off", what)], best[("on", what)]
        print(f"{what:9s} log off {off:7.1f} us   log on {on:7.1f} us   on/off {on / off:5.2f}")


if __name__ == "__main__":
    main()
