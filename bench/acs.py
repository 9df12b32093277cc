"""Sign-ins per second through POST /saml/acs, next to pysaml2's own parse on the same responses.

    .venv/bin/python bench/acs.py [N]

Builds the app in-process (webtest, a fresh SQLite database in a temporary
folder), starts N SP-initiated sign-ins (each in its own "browser", so each
response answers a fresh, browser-bound request id) and has the Entra-shaped
test IdP of the test suite sign the N responses (assertion signed,
RSA-SHA256). Then, in the same run, it times

* pysaml2's ``Saml2Client.parse_authn_request_response`` on the N responses,
  configured as the gateway configures it (the floor: signature checks with
  xmlsec1 and schema validation), and
* the whole gateway: ``POST /saml/acs`` with every check, the database
  (request id, replay cache, user lookup/creation, session row) and the
  redirect.

It prints sign-ins per second for both, the ratio, and p50/p99 per sign-in.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(n: int = 200) -> None:
    import webtest
    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client
    from saml_support import TestIdp, b64, make_keypair, start_login

    from gateway import main as make_wsgi
    from gateway.db import create_engine, migrate

    folder = Path(tempfile.mkdtemp(prefix="bench-acs-"))
    keys = make_keypair(folder, "idp")
    idp = TestIdp(folder, keys, keys, keys)
    database = f"sqlite:///{folder}/bench.sqlite"
    engine = create_engine(database)
    migrate.upgrade(engine)
    engine.dispose()
    app = make_wsgi(
        {},
        **{
            "gateway.base_url": "http://localhost",
            "gateway.plugins": "entra",
            "sqlalchemy.url": database,
            "session.secret": "bench-secret-bench-secret-bench-secret-0123",
            "session.cookie_secure": "false",
            "saml.idp_metadata": idp.write_metadata(),
        },
    )

    print(f"preparing {n} SP-initiated sign-ins ...", file=sys.stderr)
    browsers, responses, request_ids = [], [], []
    for i in range(n):
        browser = webtest.TestApp(app, extra_environ={"HTTP_HOST": "localhost"})
        request_id = start_login(browser)
        responses.append(b64(idp.response(request_id, name_id=f"user{i % 50}@example.com")))
        browsers.append(browser)
        request_ids.append(request_id)

    provider = app.registry.saml_sp
    client = Saml2Client(provider.pysaml2_config(provider.store.current()))
    # Warm both paths once (imports, schema loading) outside the timings.
    client.parse_authn_request_response(responses[0], BINDING_HTTP_POST, outstanding={request_ids[0]: "/"})

    pysaml2_times = []
    for request_id, response in zip(request_ids, responses):
        start = time.perf_counter()
        parsed = client.parse_authn_request_response(response, BINDING_HTTP_POST, outstanding={request_id: "/"})
        pysaml2_times.append(time.perf_counter() - start)
        assert parsed is not None and parsed.assertion is not None

    gateway_times = []
    for browser, response in zip(browsers, responses):
        start = time.perf_counter()
        browser.post("/saml/acs", {"SAMLResponse": response}, status=303)
        gateway_times.append(time.perf_counter() - start)

    def line(name, times):
        rate = len(times) / sum(times)
        return rate, (
            f"{name:<40} {rate:7.1f} sign-ins/s   p50 {statistics.median(times) * 1000:6.1f} ms"
            f"   p99 {percentile(times, 99) * 1000:6.1f} ms"
        )

    base_rate, base_line = line("pysaml2 parse_authn_request_response", pysaml2_times)
    gw_rate, gw_line = line("gateway POST /saml/acs (all checks + DB)", gateway_times)
    print(f"{n} valid SP-initiated responses (Entra-shaped, assertion signed RSA-SHA256), SQLite")
    print(base_line)
    print(gw_line)
    print(f"ratio gateway / pysaml2: {gw_rate / base_rate:.2f} (sign-ins/s)")
    app.registry.db_engine.dispose()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
