"""Sign-ins per second through POST /saml/acs, next to pysaml2's own parse on the same responses.

    .venv/bin/python bench/acs.py [N] [BLOCK]

Builds the app in-process (webtest, a fresh SQLite database in a temporary
folder), starts N SP-initiated sign-ins (each in its own "browser", so each
response answers a fresh, browser-bound request id) and has the Entra-shaped
test IdP of the test suite sign the N responses (assertion signed,
RSA-SHA256), once for each ``saml.crypto_backend``. Then, in the same run,
interleaved in blocks (``BLOCK`` of each kind per turn, default ten, so load
on the machine hits all alike while each runs with its own code and data in
the CPU's caches, as a server running one of them does), it times

* stock pysaml2: ``Saml2Client.parse_authn_request_response`` configured as a
  stock SP configures it (signature checks with the xmlsec1 program, schema
  validation with the pure-Python xmlschema);
* the gateway's whole check of a response in process, without the database
  (``ServiceProvider.check_response``: the guard's parse, libxml2's schema
  validation of the message as sent, the gateway's own checks, and pysaml2:
  with ``crypto_backend = inprocess`` on its fast path with the in-process
  verifier, with ``xmlsec1`` as it comes, running the program);
* the whole gateway, ``POST /saml/acs`` with every check, the database
  (request id, replay cache, user lookup/creation, session row) and the
  redirect, with ``crypto_backend = xmlsec1`` and with ``inprocess``.

It prints rates and p50/p99 per sign-in, and the ratios. In-process, through
webtest: no HTTP server, no browser round trips.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


#: Responses of one kind timed in a row before the next kind's turn.
BLOCK = 10


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main(n: int = 200, block: int = BLOCK) -> None:
    import webtest
    from saml2 import BINDING_HTTP_POST
    from saml2.client import Saml2Client

    from gateway import main as make_wsgi
    from gateway.db import create_engine, migrate
    from gateway.db.models import utcnow
    from saml_support import TestIdp, b64, make_keypair, start_login

    folder = Path(tempfile.mkdtemp(prefix="bench-acs-"))
    keys = make_keypair(folder, "idp")
    idp = TestIdp(folder, keys, keys, keys)

    def build(backend):
        database = f"sqlite:///{folder}/bench-{backend}.sqlite"
        engine = create_engine(database)
        migrate.upgrade(engine)
        engine.dispose()
        return make_wsgi(
            {},
            **{
                "gateway.base_url": "http://localhost",
                "gateway.plugins": "entra",
                "sqlalchemy.url": database,
                "session.secret": "bench-secret-bench-secret-bench-secret-0123",
                "session.cookie_secure": "false",
                "saml.idp_metadata": idp.write_metadata(),
                "saml.crypto_backend": backend,
            },
        )

    apps = {backend: build(backend) for backend in ("inprocess", "xmlsec1")}

    print(f"preparing {n} SP-initiated sign-ins per backend ...", file=sys.stderr)
    prepared = {}
    for backend, app in apps.items():
        rows = []
        for i in range(n):
            browser = webtest.TestApp(app, extra_environ={"HTTP_HOST": "localhost"})
            request_id = start_login(browser)
            rows.append((browser, request_id, b64(idp.response(request_id, name_id=f"user{i % 50}@example.com"))))
        prepared[backend] = rows

    # pysaml2 as a stock SP configures it (xmlsec1, its own schema validation),
    # and the gateway's check of a response with each backend.
    stock = Saml2Client(
        apps["xmlsec1"].registry.saml_sp.pysaml2_config(apps["xmlsec1"].registry.saml_sp.store.current())
    )
    providers = {backend: app.registry.saml_sp for backend, app in apps.items()}

    def stock_parse(rid, resp):
        parsed = stock.parse_authn_request_response(resp, BINDING_HTTP_POST, outstanding={rid: "/"})
        assert parsed is not None and parsed.assertion is not None

    def gateway_check(backend):
        def check(rid, resp):
            assert providers[backend].check_response(resp, utcnow(), solicited_by=rid).name_id

        return check

    checks = (
        ("stock", stock_parse),
        ("check_inprocess", gateway_check("inprocess")),
        ("check_xmlsec1", gateway_check("xmlsec1")),
    )
    _browser, rid, resp = prepared["xmlsec1"][0]
    for _name, check in checks:
        check(rid, resp)

    times = {name: [] for name in ("stock", "check_inprocess", "check_xmlsec1", "inprocess", "xmlsec1")}
    # Interleaved in blocks: machine noise hits all alike, and none runs on the caches another left cold.
    for first in range(0, n, block):
        indexes = range(first, min(n, first + block))
        for name, check in checks:
            for i in indexes:
                _browser, rid, resp = prepared["xmlsec1"][i]
                start = time.perf_counter()
                check(rid, resp)
                times[name].append(time.perf_counter() - start)
        for backend in ("inprocess", "xmlsec1"):
            for i in indexes:
                browser, _rid, response = prepared[backend][i]
                start = time.perf_counter()
                browser.post("/saml/acs", {"SAMLResponse": response}, status=303)
                times[backend].append(time.perf_counter() - start)

    def line(name, values):
        rate = len(values) / sum(values)
        return rate, (
            f"{name:<52} {rate:7.1f} /s   p50 {statistics.median(values) * 1000:6.1f} ms"
            f"   p99 {percentile(values, 99) * 1000:6.1f} ms"
        )

    print(
        f"{n} valid SP-initiated responses (Entra-shaped, assertion signed RSA-SHA256), SQLite,"
        f" interleaved in blocks of {block}"
    )
    rates = {}
    for name, label in (
        ("stock", "stock pysaml2 parse (xmlsec1 + xmlschema)"),
        ("check_inprocess", "gateway response check, crypto_backend=inprocess"),
        ("check_xmlsec1", "gateway response check, crypto_backend=xmlsec1"),
        ("xmlsec1", "gateway POST /saml/acs, crypto_backend=xmlsec1"),
        ("inprocess", "gateway POST /saml/acs, crypto_backend=inprocess"),
    ):
        rates[name], text = line(label, times[name])
        print(text)
    print(f"ratio gateway check / stock parse:      {rates['check_inprocess'] / rates['stock']:.2f}")
    print(f"ratio gateway inprocess / stock parse:  {rates['inprocess'] / rates['stock']:.2f}")
    print(f"ratio gateway inprocess / xmlsec1:      {rates['inprocess'] / rates['xmlsec1']:.2f}")
    for app in apps.values():
        app.registry.db_engine.dispose()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
