"""``pserve development.ini`` starts and answers the health probes."""

import re
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import BIN, free_port, server_environment

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_pserve_development_ini_answers_healthz_and_readyz(tmp_path, pserve):
    ini = tmp_path / "development.ini"
    port = free_port()
    ini.write_text((ROOT / "development.ini").read_text().replace("127.0.0.1:6543", f"127.0.0.1:{port}"))
    served = pserve(ini, port)
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(served.url + path, timeout=10) as response:
            assert response.status == 200 and b'"ok"' in response.read()


@pytest.mark.slow
def test_pserve_refuses_a_bad_setting_with_one_line(tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text((ROOT / "development.ini").read_text().replace("saml.clock_skew = 180", "saml.clock_skew = ten"))
    result = subprocess.run(
        [str(BIN / "pserve"), str(ini)], capture_output=True, text=True, timeout=60, env=server_environment()
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'saml.clock_skew: expected a whole number of seconds between 0 and 600, got "ten"'
    )
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- the Granian runner (gateway/serve.py)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("workers = two", 'server:main workers: expected a number of processes from 1 to 64, or auto, got "two"'),
        ("threads = 0", 'server:main threads: expected Python threads per worker from 1 to 256, got "0"'),
        ("listen = 6543", 'server:main listen: expected HOST:PORT such as 127.0.0.1:6543, got "6543"'),
        ("thread = 2", "server:main thread: unknown setting; known: listen, workers, threads, backlog, app"),
    ],
)
def test_a_bad_server_setting_stops_pserve_with_one_line(tmp_path, line, message):
    ini = tmp_path / "bad.ini"
    text = (ROOT / "development.ini").read_text()
    key = line.split(" = ")[0]
    server = re.search(r"^\[server:main\]\n(?:(?!\[).*\n)*", text, re.M)
    section = re.sub(rf"^{key} = .*\n", "", server.group(0), flags=re.M) + line + "\n"
    ini.write_text(text[: server.start()] + section + text[server.end() :])
    result = subprocess.run(
        [str(BIN / "pserve"), str(ini)], capture_output=True, text=True, timeout=60, env=server_environment()
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("cpus", "workers"), [(1, 2), (2, 2), (8, 8), (100, 64)])
def test_auto_runs_one_worker_per_cpu_and_at_least_two(monkeypatch, cpus, workers):
    # One per CPU measured faster than two per CPU (gateway/serve.py); one
    # worker alone would queue every request behind a slow one.
    from gateway import serve

    monkeypatch.setattr(serve.os, "sched_getaffinity", lambda _pid: set(range(cpus)))
    assert serve.parse_server_settings({"workers": "auto"})["workers"] == workers
    assert serve.parse_server_settings({})["workers"] == workers


def _children(pid: int) -> set[int]:
    """The worker processes of pserve ``pid``: spawned children (multiprocessing's
    resource tracker, its other child, is not a worker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until_gone(pids: set[int], message: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.mark.slow
def test_several_workers_serve_one_sqlite_database_and_stop_together(live_gateway, sqlite_url):
    from scim_support import http

    gateway = live_gateway(sqlite_url, server={"workers": 2, "threads": 1})
    workers = _children(gateway.process.pid)
    assert len(workers) == 2, workers
    token = gateway.token()
    # Concurrent writes land in either process; SQLite's single writer takes
    # them in turn (gateway/db/sqlite_writer.py) and none is lost.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda i: http("POST", f"{gateway.scim_url}/Users", token, {"userName": f"w{i}@contoso.com"})[0],
                range(40),
            )
        )
    assert statuses == [201] * 40
    status, page = http("GET", f"{gateway.scim_url}/Users?count=100", token)
    assert status == 200 and page["totalResults"] == 40

    gateway.process.terminate()
    gateway.process.wait(timeout=20)
    _wait_until_gone(workers, "a worker outlived pserve")


@pytest.mark.slow
def test_http_variables_of_the_process_do_not_read_as_request_headers(live_gateway, sqlite_url):
    # Granian starts each request's environ from os.environ; an HTTP_* variable
    # of the server process must not pass for a header the client never sent.
    from sqlalchemy.orm import Session

    from gateway.db import create_engine
    from gateway.scim.tokens import create_token
    from scim_support import http

    engine = create_engine(sqlite_url)
    with Session(engine) as session, session.begin():
        token = create_token(session, "entra")
    engine.dispose()
    gateway = live_gateway(sqlite_url, env={"HTTP_AUTHORIZATION": f"Bearer {token}"})
    status, body = http("GET", f"{gateway.scim_url}/Users", token="")
    assert status == 401, body
    assert http("GET", f"{gateway.scim_url}/Users", token)[0] == 200


@pytest.mark.slow
def test_workers_do_not_outlive_a_killed_master(live_gateway, sqlite_url):
    gateway = live_gateway(sqlite_url, server={"workers": 2})
    workers = _children(gateway.process.pid)
    assert len(workers) == 2
    gateway.process.kill()
    gateway.process.wait(timeout=10)
    _wait_until_gone(workers, "a worker outlived its killed master")


def _listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (each Granian worker opens its own)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
                count += 1
    return count


SLOW_FIRST_WORKER = '''
"""Makes the first worker of a pserve load three seconds slower than the others."""
import os, time
from gateway import hookimpl

@hookimpl
def gateway_pyramid_configure(config):
    # A forked worker inherits this module from pserve's own load: the check runs at each load.
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read()
    if b"pserve" in parent:
        try:
            os.close(os.open(os.environ["SLOW_WORKER_MARK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            time.sleep(3)
        except FileExistsError:
            pass
'''


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_workers_start_listening_together(live_gateway, sqlite_url, plugin_dir, tmp_path, monkeypatch):
    # A worker listens once its app has loaded, and keep-alive clients stay
    # with the worker that took their connection: one that started listening
    # a few seconds before the others would take all the first clients.
    (plugin_dir / "slow_first_worker.py").write_text(SLOW_FIRST_WORKER)
    mark = tmp_path / "slow-worker"
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir))
    monkeypatch.setenv("SLOW_WORKER_MARK", str(mark))
    gateway = live_gateway(
        sqlite_url, server={"workers": 3}, **{"gateway.plugins": "entra devidp sqlstore slow_first_worker"}
    )
    assert mark.exists()  # one worker did load slowly
    # pserve's fixture returns at the first answer to /healthz; the others
    # open their sockets within moments of it, not seconds later.
    deadline = time.monotonic() + 0.5
    while _listening_sockets(gateway.port) < 3:
        assert time.monotonic() < deadline, f"{_listening_sockets(gateway.port)} of 3 workers listen"
        time.sleep(0.01)


def test_a_worker_killed_at_the_start_line_holds_nobody_up():
    # A worker waiting for the others can die there (out of memory, a stray
    # kill); its replacement and the others must still start.
    import multiprocessing
    import os
    import signal

    from gateway.serve import _StartLine

    line = _StartLine(2)
    waiting = multiprocessing.get_context("fork").Process(target=line.loaded)
    waiting.start()
    time.sleep(0.5)  # counted in, now waiting for the second worker
    assert waiting.is_alive()
    os.kill(waiting.pid, signal.SIGKILL)  # dies while it waits for the second worker
    waiting.join()
    finished = []
    for _ in range(2):  # the replacement, then the second worker
        other = multiprocessing.get_context("fork").Process(target=line.loaded)
        other.start()
        other.join(timeout=5)
        finished.append(other.exitcode)
        if other.is_alive():
            other.kill()
    assert finished == [0, 0]


GC_PROBE = '''
"""GET /gc-probe?garbage=N: N reference cycles moved to the oldest generation and dropped there, as
a request's are when a collection runs while it is in flight; then this worker's collector state."""
import gc
from gateway import hookimpl

@hookimpl
def gateway_pyramid_configure(config):
    def probe(request):
        cycles = []
        for _ in range(int(request.params.get("garbage", 0))):
            cycle = []
            cycle.append(cycle)
            cycles.append(cycle)
        gc.collect(1)  # what a young collection does to objects still in use
        del cycles
        # Enough live allocations for an automatic collection (the threshold differs between
        # Python versions): that is where CPython decides whether to collect everything.
        ballast = [[] for _ in range(gc.get_threshold()[0] + 1)]
        del ballast
        return {"full": gc.get_stats()[2]["collections"], "gen2": len(gc.get_objects(2)), "frozen": gc.get_freeze_count()}

    config.add_route("gc_probe", "/gc-probe")
    config.add_view(probe, route_name="gc_probe", renderer="json")
'''


@pytest.mark.slow
def test_a_worker_collects_garbage_in_its_oldest_generation_as_it_goes(
    live_gateway, sqlite_url, plugin_dir, monkeypatch
):
    # A worker freezes its start-up objects out of the collector (gateway/serve.py). CPython then
    # held its next full collection back until a quarter of their number had reached the oldest
    # generation: ordinary requests' reference cycles piled up there, the soak's steady growth
    # (docs/benchmarks.md, Soak).
    import json

    (plugin_dir / "gc_probe.py").write_text(GC_PROBE)
    monkeypatch.setenv("PYTHONPATH", str(plugin_dir))
    gateway = live_gateway(sqlite_url, server={"workers": 1}, **{"gateway.plugins": "entra devidp sqlstore gc_probe"})

    def probe(garbage: int = 0) -> dict:
        with urllib.request.urlopen(f"{gateway.url}/gc-probe?garbage={garbage}", timeout=30) as response:
            return json.loads(response.read())

    before = probe()
    for _ in range(30):
        after = probe(garbage=1000)
    assert 30 * 1000 < before["frozen"] / 4  # the frozen objects alone would hold it back
    assert after["full"] > before["full"], (before, after)
    assert after["gen2"] < 30 * 1000, (before, after)
