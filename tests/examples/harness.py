"""The example apps' end-to-end contract, shared by the FastAPI, Flask and Django test modules.

Each test class subclasses :class:`AppContract` and says how to start its app.
The fixtures start a FakeStripe in this process, then the app in a subprocess
with a real HTTP server on 127.0.0.1 (its own table prefix in the run's
PostgreSQL database), and drive it over HTTP with httpx. What the apps leave
to back-office tools (registering streamers, Connect accounts, crediting
coins) the tests do directly through the library, on the same database and
prefix, as an admin tool would.

Every response the tests receive is checked against the app's own OpenAPI
document (:class:`OpenAPICheck`): its status must be documented for the route,
with the content type and the JSON Schema the document gives.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jsonschema
import pytest
import referencing
import referencing.jsonschema
from examples.common.services import Services, Settings, build_services

from spaktok_ledger import Worker, WorkerSchedule
from spaktok_ledger.testing import FakeStripe, signed_event

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk_test_examples"
SECRET = "whsec_test_examples_platform"
CONNECT_SECRET = "whsec_test_examples_connect"
EUR_SETTLEMENT = Decimal("1.0705")  # USD per EUR when Stripe settles a EUR charge
# How long an app may take to answer its first request. Django's start-up
# (settings, app registry, migrations check) took over 30 s on a 2-core machine
# under load; a healthy start takes a few seconds, so the bound only matters
# when something is wrong, and then the app's log is shown.
STARTUP_SECONDS = float(os.environ.get("SPAKTOK_TEST_STARTUP_SECONDS", "180"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll until the server answers HTTP (any status), or fail with its log."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(url + "/api/wallet/balance", timeout=1, trust_env=False)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        return
    pytest.fail(f"the app did not answer within {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem answer with this status and code; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["title"]
    assert body["detail"]
    return body


class OpenAPICheck:
    """Validates real responses against an OpenAPI 3.1 document's response schemas."""

    BASE = "urn:spaktok-example:openapi"

    def __init__(self, document: dict[str, Any]) -> None:
        assert document["openapi"].startswith("3.1"), document["openapi"]
        self.document = document
        resource = referencing.jsonschema.DRAFT202012.create_resource(document)
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(
            self.BASE, resource
        )
        self.checked: list[tuple[str, str, int]] = []

    @staticmethod
    def _pointer(*parts: str) -> str:
        return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)

    def check(self, response: httpx.Response) -> None:
        """Raise AssertionError unless the response is one the document describes."""
        method = response.request.method.lower()
        path = response.request.url.path
        operation = self.document["paths"].get(path, {}).get(method)
        if operation is None:
            return  # not an API route (an unknown URL, the document itself)
        responses = operation["responses"]
        documented = responses.get(str(response.status_code))
        assert documented is not None, (
            f"{method.upper()} {path} answered {response.status_code}, which its OpenAPI "
            f"document does not list (it lists {sorted(responses)}): {response.text}"
        )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        content = documented.get("content", {})
        assert media_type in content, (
            f"{method.upper()} {path} {response.status_code}: content type {media_type!r}, "
            f"documented {sorted(content)}"
        )
        pointer = self._pointer(
            "paths", path, method, "responses", str(response.status_code), "content",
            media_type, "schema",
        )
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"{self.BASE}#/{pointer}"}, registry=self.registry
        )
        errors = sorted(validator.iter_errors(response.json()), key=lambda e: e.path)
        assert not errors, (
            f"{method.upper()} {path} {response.status_code} does not match its documented "
            f"schema: {[e.message for e in errors]}\n{response.text}"
        )
        self.checked.append((method, path, response.status_code))


class AppContract:
    """The HTTP behaviour every example app must have; subclasses say how to start theirs."""

    prefix: ClassVar[str]
    openapi_path: ClassVar[str] = "/api/openapi.json"
    """Where the app serves its OpenAPI document."""

    @classmethod
    def command(cls, port: int) -> list[str]:
        """The command line that serves the app on 127.0.0.1:``port``."""
        raise NotImplementedError

    # -- fixtures (class-scoped: one server per app) ---------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def fake(cls) -> Iterator[FakeStripe]:
        with FakeStripe() as fake:
            yield fake

    @pytest.fixture(scope="class")
    @classmethod
    def settings(cls, pg_database_url: str, fake: FakeStripe) -> Settings:
        return Settings(
            stripe_secret_key=API_KEY,
            stripe_webhook_secret=SECRET,
            stripe_connect_webhook_secret=CONNECT_SECRET,
            database_url=pg_database_url,
            table_prefix=cls.prefix,
            stripe_api_base=fake.url,
            rates="static",
            payout_mode="manual",
            payout_minimum_usd_minor=100,
        )

    @classmethod
    def serve(
        cls, settings: Settings, tmp_path_factory: pytest.TempPathFactory, mode: str
    ) -> Iterator[str]:
        """Run the app in a subprocess with webhooks in ``mode`` (``inline``/``fast-ack``)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "SPAKTOK_DATABASE_URL": settings.database_url,
            "SPAKTOK_TABLE_PREFIX": settings.table_prefix,
            "STRIPE_API_BASE": str(settings.stripe_api_base),
            "STRIPE_SECRET_KEY": API_KEY,
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "STRIPE_CONNECT_WEBHOOK_SECRET": CONNECT_SECRET,
            "SPAKTOK_RATES": "static",
            "SPAKTOK_PAYOUT_MODE": "manual",
            "SPAKTOK_PAYOUT_MINIMUM_USD_MINOR": "100",
            "SPAKTOK_WEBHOOK_MODE": mode,
            # The tests run the worker themselves when they want events applied.
            "SPAKTOK_IN_PROCESS_WORKER": "0",
            "PYTHONUNBUFFERED": "1",
        }
        log = tmp_path_factory.mktemp(f"{cls.prefix}{mode}") / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                cls.command(port), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until_up(process, url, log)
            yield url
        finally:
            stop(process)

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        # The story checks each webhook's outcome in its answer: inline. Fast
        # acknowledgement (the apps' default) has its own server and test below.
        yield from cls.serve(settings, tmp_path_factory, "inline")

    @pytest.fixture(scope="class")
    @classmethod
    def fast_ack_server(
        cls, settings: Settings, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[str]:
        yield from cls.serve(settings, tmp_path_factory, "fast-ack")

    @pytest.fixture(scope="class")
    @classmethod
    def admin(cls, server: str, settings: Settings) -> Iterator[Services]:
        """The library on the app's database and prefix, as a back-office tool uses it."""
        services = build_services(settings)
        services.economy.register_streamer("sam")  # receives gifts in the refusal tests
        yield services
        services.close()

    @pytest.fixture(scope="class")
    @classmethod
    def openapi(cls, server: str) -> OpenAPICheck:
        """The app's own OpenAPI document, as served."""
        response = httpx.get(server + cls.openapi_path, timeout=30, trust_env=False)
        assert response.status_code == 200, response.text
        return OpenAPICheck(response.json())

    @pytest.fixture
    def api(self, server: str, openapi: OpenAPICheck) -> Iterator[httpx.Client]:
        """An HTTP client whose every response is checked against the OpenAPI document."""
        with self.checked_client(server, openapi) as client:
            yield client

    @staticmethod
    @contextlib.contextmanager
    def checked_client(base_url: str, openapi: OpenAPICheck) -> Iterator[httpx.Client]:
        """A client on ``base_url`` that checks every response against ``openapi``."""

        def check(response: httpx.Response) -> None:
            response.read()
            openapi.check(response)

        with httpx.Client(
            base_url=base_url, timeout=30, trust_env=False, event_hooks={"response": [check]}
        ) as client:
            yield client

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def as_user(user: str, key: str | None = None) -> dict[str, str]:
        headers = {"X-User-Id": user}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    @staticmethod
    def fund(admin: Services, user: str, coins: int) -> None:
        """Credit coins as a confirmed purchase would (an admin shortcut past Checkout)."""
        admin.economy.credit_purchase(
            user, coins=coins, price_usd_minor=coins, idempotency_key=f"fund:{user}"
        )

    def snapshot(self, api: httpx.Client, user: str) -> tuple[Any, Any]:
        """What a user can see of their money: the balance and the whole statement."""
        balance = api.get("/api/wallet/balance", headers=self.as_user(user))
        history = api.get("/api/transactions", params={"limit": 100}, headers=self.as_user(user))
        assert balance.status_code == 200, balance.text
        assert history.status_code == 200, history.text
        return balance.json(), history.json()

    @staticmethod
    def deliver(api: httpx.Client, path: str, event: dict[str, Any], secret: str) -> httpx.Response:
        body, signature = signed_event(event, secret)
        return api.post(path, content=body, headers={"Stripe-Signature": signature})

    def checkout(self, api: httpx.Client, user: str, key: str) -> dict[str, Any]:
        quote = api.post(
            "/api/quotes",
            json={"pack_id": "fan", "currency": "EUR", "locale": "de_DE"},
            headers=self.as_user(user),
        )
        assert quote.status_code == 201, quote.text
        session = api.post(
            "/api/payments/create-checkout-session",
            json={"quote_id": quote.json()["id"]},
            headers=self.as_user(user, key),
        )
        assert session.status_code == 201, session.text
        return {"quote": quote.json(), **session.json()}

    # -- the story ---------------------------------------------------------------------------

    def test_whole_story_over_http(
        self, api: httpx.Client, fake: FakeStripe, admin: Services
    ) -> None:
        """Quote, checkout, signed webhook, balance, gifts, history pages, payout, payout webhook."""
        # Back office: bob streams, and his Connect account finishes onboarding by webhook.
        admin.economy.register_streamer("bob")
        account = fake.create_account(country="US")["id"]
        assert not admin.payouts.link_account("bob", account).payouts_enabled
        onboarded = self.deliver(
            api, "/api/payouts/webhook", fake.onboard_account(account), CONNECT_SECRET
        )
        assert onboarded.status_code == 200, onboarded.text
        assert onboarded.json()["outcome"] == "kyc_updated"

        # Alice buys the Fan pack in euros.
        bought = self.checkout(api, "alice", "buy-1")
        quote = bought["quote"]
        assert (quote["currency"], quote["display"]) == ("EUR", "18,67\xa0€")
        assert (bought["currency"], bought["amount_minor"]) == ("EUR", quote["local_amount_minor"])
        again = api.post(
            "/api/payments/create-checkout-session",
            json={"quote_id": quote["id"]},
            headers=self.as_user("alice", "buy-1"),
        )
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert {k: again.json()[k] for k in ("purchase_id", "checkout_session_id")} == {
            k: bought[k] for k in ("purchase_id", "checkout_session_id")
        }
        assert self.snapshot(api, "alice")[0]["wallet"]["coins"] == 0  # not paid yet

        # Stripe: the customer pays, the signed webhook credits the coins (once).
        paid = fake.complete_checkout(  # funds available at once, like Stripe's 0077 test card
            bought["checkout_session_id"], exchange_rate=EUR_SETTLEMENT, available_now=True
        )
        credited = self.deliver(api, "/api/payments/webhook", paid, SECRET)
        assert credited.status_code == 200, credited.text
        assert credited.json()["outcome"] == "credited"
        duplicate = self.deliver(api, "/api/payments/webhook", paid, SECRET)
        assert duplicate.json()["outcome"] == "duplicate"
        balance = api.get("/api/wallet/balance", headers=self.as_user("alice")).json()
        assert balance["wallet"]["coins"] == 2200
        assert balance["earnings"] is None

        # Gifts during bob's stream; a retried tap is answered from the first one.
        receipts = []
        for key, gift, quantity in [("g1", "crown", 2), ("g2", "heart", 3), ("g3", "rose", 1)]:
            sent = api.post(
                "/api/gifts/send",
                json={"streamer_id": "bob", "gift_id": gift, "quantity": quantity},
                headers=self.as_user("alice", key),
            )
            assert sent.status_code == 201, sent.text
            assert "Idempotent-Replayed" not in sent.headers
            receipts.append(sent.json())
        assert [r["gift"]["streamer_share_minor"] for r in receipts] == [399, 118, 4]
        assert receipts[-1]["sender_wallet"]["coins"] == 2200 - 998 - 297 - 10
        assert "streamer_earnings" not in receipts[-1]  # not the sender's business
        retried = api.post(
            "/api/gifts/send",
            json={"streamer_id": "bob", "gift_id": "heart", "quantity": 3},
            headers=self.as_user("alice", "g2"),
        )
        assert retried.status_code == 201, retried.text
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert retried.json() == receipts[1]

        # Alice's statement, two items a page, newest first.
        items, cursor, pages = [], None, 0
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = api.get("/api/transactions", params=params, headers=self.as_user("alice"))
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor, pages = page.json()["next_cursor"], pages + 1
            if cursor is None:
                break
        assert pages >= 2
        assert [i["type"] for i in items] == ["gift", "gift", "gift", "purchase"]
        assert [i["change_minor"] for i in items] == [-10, -297, -998, 2200]
        assert items[0]["counterparty"] == "streamer:bob"
        purchases_only = api.get(
            "/api/transactions", params={"type": "purchase"}, headers=self.as_user("alice")
        )
        assert [i["type"] for i in purchases_only.json()["items"]] == ["purchase"]

        # Bob cashes out everything; the bank payout is paid and Stripe says so.
        earnings = api.get("/api/wallet/balance", headers=self.as_user("bob")).json()["earnings"]
        assert earnings["available_minor"] == 399 + 118 + 4
        payout = api.post(
            "/api/payouts/request",
            json={"amount_usd_minor": "all"},
            headers=self.as_user("bob", "cash-out-1"),
        )
        assert payout.status_code == 202, payout.text
        record = payout.json()
        assert (record["amount_usd_minor"], record["status"]) == (521, "in_transit")
        replay = api.post(
            "/api/payouts/request",
            json={"amount_usd_minor": "all"},
            headers=self.as_user("bob", "cash-out-1"),
        )
        assert replay.status_code == 202
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["payout_id"] == record["payout_id"]
        held = api.get("/api/wallet/balance", headers=self.as_user("bob")).json()["earnings"]
        assert (held["available_minor"], held["in_payout_minor"]) == (0, 521)

        bank_paid = fake.pay_payout(record["stripe_payout_id"])
        settled = self.deliver(api, "/api/payouts/webhook", bank_paid, CONNECT_SECRET)
        assert settled.status_code == 200, settled.text
        assert settled.json()["outcome"] == "paid"
        after = api.get("/api/wallet/balance", headers=self.as_user("bob")).json()["earnings"]
        assert (after["available_minor"], after["in_payout_minor"]) == (0, 0)
        statement = api.get(
            "/api/transactions", params={"streamer_id": "bob"}, headers=self.as_user("bob")
        ).json()["items"]
        assert [i["type"] for i in statement][:2] == ["payout", "payout"]
        assert [i["type"] for i in statement].count("gift") == 3
        assert admin.payouts.payout(record["payout_id"]).status == "paid"
        assert admin.ledger.verify().ok

    # -- bad requests: clear 4xx answers, nothing written -------------------------------------

    def test_requests_without_a_caller_are_401(self, api: httpx.Client) -> None:
        """No X-User-Id (the auth stand-in) is a 401 problem on every caller endpoint."""
        body = problem(api.get("/api/wallet/balance"), 401, "unauthenticated")
        assert "X-User-Id" in body["detail"]
        sent = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose"},
            headers={"Idempotency-Key": "k"},
        )
        problem(sent, 401, "unauthenticated")

    def test_malformed_json_is_400_and_writes_nothing(
        self, api: httpx.Client, admin: Services
    ) -> None:
        """A body that is not JSON is a 400 problem; the wallet and statement are unchanged."""
        self.fund(admin, "carol", 500)
        before = self.snapshot(api, "carol")
        sent = api.post(
            "/api/gifts/send",
            content=b'{"streamer_id": "sam", "gift_id": "rose",',
            headers={**self.as_user("carol", "t1"), "Content-Type": "application/json"},
        )
        problem(sent, 400, "malformed_json")
        assert self.snapshot(api, "carol") == before

    def test_missing_or_wrong_fields_are_422_and_write_nothing(
        self, api: httpx.Client, admin: Services
    ) -> None:
        """Missing, mistyped and unknown fields are one 422 listing each; nothing is written."""
        self.fund(admin, "dora", 500)
        before = self.snapshot(api, "dora")
        missing = api.post(
            "/api/gifts/send", json={"gift_id": "rose"}, headers=self.as_user("dora", "t1")
        )
        body = problem(missing, 422, "validation_failed")
        assert [e["field"] for e in body["errors"]] == ["streamer_id"]
        mistyped = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose", "quantity": 1.0, "note": "hi"},
            headers=self.as_user("dora", "t2"),
        )
        body = problem(mistyped, 422, "validation_failed")
        assert sorted(e["field"] for e in body["errors"]) == ["note", "quantity"]
        payout = api.post(
            "/api/payouts/request",
            json={"amount_usd_minor": "12.50"},
            headers=self.as_user("dora", "p1"),
        )
        problem(payout, 422, "validation_failed")
        problem(
            api.post("/api/quotes", json={}, headers=self.as_user("dora")), 422, "validation_failed"
        )
        assert self.snapshot(api, "dora") == before

    def test_forged_webhook_signature_is_400_and_credits_nothing(
        self, api: httpx.Client, fake: FakeStripe, admin: Services
    ) -> None:
        """A forged or missing Stripe-Signature is a 400; the genuine delivery still credits."""
        bought = self.checkout(api, "erin", "buy-erin")
        paid = fake.complete_checkout(  # funds available at once, like Stripe's 0077 test card
            bought["checkout_session_id"], exchange_rate=EUR_SETTLEMENT, available_now=True
        )
        before = self.snapshot(api, "erin")
        forged = self.deliver(api, "/api/payments/webhook", paid, "whsec_someone_else")
        problem(forged, 400, "webhook_verification_error")
        unsigned = api.post("/api/payments/webhook", content=b'{"id": "evt_1"}')
        problem(unsigned, 400, "webhook_verification_error")
        connect = self.deliver(api, "/api/payouts/webhook", paid, SECRET)  # wrong endpoint secret
        problem(connect, 400, "webhook_verification_error")
        assert self.snapshot(api, "erin") == before
        assert admin.payments.purchase(bought["purchase_id"]).status == "open"
        genuine = self.deliver(api, "/api/payments/webhook", paid, SECRET)
        assert genuine.json()["outcome"] == "credited"
        assert self.snapshot(api, "erin")[0]["wallet"]["coins"] == 2200

    def test_fast_ack_stores_both_endpoints_deliveries_for_the_worker(
        self,
        fast_ack_server: str,
        openapi: OpenAPICheck,
        fake: FakeStripe,
        admin: Services,
    ) -> None:
        """In fast-ack mode (the apps' default) the platform and the Connect endpoint both
        answer ``queued`` without applying anything; one worker round applies both."""
        with self.checked_client(fast_ack_server, openapi) as api:
            admin.economy.register_streamer("qfa_streamer")
            account = fake.create_account(country="US")["id"]
            admin.payouts.link_account("qfa_streamer", account)
            bought = self.checkout(api, "qfa_viewer", "buy-qfa")
            paid = fake.complete_checkout(
                bought["checkout_session_id"], exchange_rate=EUR_SETTLEMENT, available_now=True
            )
            answers = [
                self.deliver(api, "/api/payments/webhook", paid, SECRET),
                self.deliver(
                    api, "/api/payouts/webhook", fake.onboard_account(account), CONNECT_SECRET
                ),
            ]
            assert [(a.status_code, a.json()["outcome"]) for a in answers] == [
                (200, "queued"),
                (200, "queued"),
            ]
            # Nothing is applied until a worker runs.
            assert admin.payments.purchase(bought["purchase_id"]).status == "open"
            linked = admin.payouts.account_status("qfa_streamer")
            assert linked is not None and not linked.payouts_enabled
            quiet = WorkerSchedule(
                expire_holds=None,
                mature_earnings=None,
                retry_refunds=None,
                reconcile_payouts=None,
                sweep=None,
            )
            report = Worker(admin.payments, admin.payouts, schedule=quiet).run_once()
            assert report.errors == ()
            assert report.outcomes.get("credited") == 1
            assert report.outcomes.get("kyc_updated") == 1
            assert self.snapshot(api, "qfa_viewer")[0]["wallet"]["coins"] == 2200
            linked = admin.payouts.account_status("qfa_streamer")
            assert linked is not None and linked.payouts_enabled

    def test_someone_elses_wallet_is_403(self, api: httpx.Client, admin: Services) -> None:
        """A caller can read only their own wallet and statements: anyone else's is a 403."""
        self.fund(admin, "fay", 300)
        mallory = self.as_user("mallory")
        body = problem(
            api.get("/api/wallet/balance", params={"user_id": "fay"}, headers=mallory),
            403,
            "forbidden",
        )
        assert "coins" not in str(body)
        problem(
            api.get("/api/transactions", params={"user_id": "fay"}, headers=mallory),
            403,
            "forbidden",
        )
        problem(
            api.get("/api/transactions", params={"streamer_id": "sam"}, headers=mallory),
            403,
            "forbidden",
        )
        own = api.get("/api/wallet/balance", params={"user_id": "fay"}, headers=self.as_user("fay"))
        assert own.json()["wallet"]["coins"] == 300

    def test_missing_idempotency_key_is_400_and_moves_no_money(
        self, api: httpx.Client, admin: Services
    ) -> None:
        """Every POST that moves money needs an Idempotency-Key: without one, 400, nothing written."""
        self.fund(admin, "gus", 500)
        before = self.snapshot(api, "gus")
        gift = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose"},
            headers=self.as_user("gus"),
        )
        problem(gift, 400, "idempotency_key_required")
        quote = api.post("/api/quotes", json={"pack_id": "starter"}, headers=self.as_user("gus"))
        checkout = api.post(
            "/api/payments/create-checkout-session",
            json={"quote_id": quote.json()["id"]},
            headers=self.as_user("gus"),
        )
        problem(checkout, 400, "idempotency_key_required")
        payout = api.post(
            "/api/payouts/request", json={"amount_usd_minor": "all"}, headers=self.as_user("sam")
        )
        problem(payout, 400, "idempotency_key_required")
        assert self.snapshot(api, "gus") == before
        assert admin.payments.purchases("gus") == []
        assert admin.payouts.payouts("sam") == []

    def test_insufficient_coins_is_409_and_the_key_stays_free(
        self, api: httpx.Client, admin: Services
    ) -> None:
        """A gift worth more than the wallet is a 409; nothing is written and the key is reusable."""
        self.fund(admin, "hal", 500)
        before = self.snapshot(api, "hal")
        rocket = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rocket"},
            headers=self.as_user("hal", "tap-1"),
        )
        body = problem(rocket, 409, "insufficient_funds")
        assert (body["available_minor"], body["required_minor"]) == (500, 5000)
        assert self.snapshot(api, "hal") == before
        rose = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose"},
            headers=self.as_user("hal", "tap-1"),
        )
        assert rose.status_code == 201, rose.text
        conflict = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "heart"},
            headers=self.as_user("hal", "tap-1"),
        )
        problem(conflict, 409, "idempotency_conflict")
        assert self.snapshot(api, "hal")[0]["wallet"]["coins"] == 490

    def test_other_refusals_map_to_their_statuses(self, api: httpx.Client, admin: Services) -> None:
        """Unknown gifts and packs, and the earnings statement of a non-streamer, are 404;
        gifts to oneself 422, payouts without Connect 409."""
        self.fund(admin, "ivy", 500)
        before = self.snapshot(api, "ivy")
        unknown = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "unicorn"},
            headers=self.as_user("ivy", "u1"),
        )
        problem(unknown, 404, "unknown_gift")
        nobody = api.post(
            "/api/gifts/send",
            json={"streamer_id": "nobody", "gift_id": "rose"},
            headers=self.as_user("ivy", "u2"),
        )
        problem(nobody, 404, "unknown_streamer")
        problem(
            api.post("/api/quotes", json={"pack_id": "nope"}, headers=self.as_user("ivy")),
            404,
            "unknown_pack",
        )
        to_self = api.post(
            "/api/gifts/send",
            json={"streamer_id": "sam", "gift_id": "rose"},
            headers=self.as_user("sam", "self-1"),
        )
        problem(to_self, 422, "gift_rejected")
        no_account = api.post(
            "/api/payouts/request",
            json={"amount_usd_minor": 200},
            headers=self.as_user("sam", "p-1"),
        )
        problem(no_account, 409, "payouts_not_enabled")
        problem(api.get("/api/nowhere", headers=self.as_user("ivy")), 404, "not_found")
        # Her earnings statement, though she does not stream (found by the HTTP fuzzer:
        # a 404 the route did not document).
        not_a_streamer = api.get(
            "/api/transactions", params={"streamer_id": "ivy"}, headers=self.as_user("ivy")
        )
        problem(not_a_streamer, 404, "unknown_streamer")
        assert self.snapshot(api, "ivy") == before
