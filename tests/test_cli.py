"""The ``spaktok-ledger`` command line: output, JSON, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spaktok_ledger import AccountKind, AccountSpec, EntryDraft, Ledger, Posting, head_revision
from spaktok_ledger.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    with Ledger(url) as ledger:
        ledger.migrate()
        ledger.open_accounts(
            [
                AccountSpec("user:1:wallet", AccountKind.LIABILITY),
                AccountSpec("platform:stripe_clearing", AccountKind.ASSET),
            ]
        )
        for i in range(3):
            ledger.post(
                EntryDraft(
                    "purchase",
                    (
                        Posting.debit("platform:stripe_clearing", 1234),
                        Posting.credit("user:1:wallet", 1234),
                    ),
                    f"p{i}",
                    description=f"pack {i}",
                )
            )
    return url


def test_migrate_creates_schema(tmp_path) -> None:
    """migrate (alias init) creates the schema and reports the revision."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code, out, _ = run("--db", url, "init")
    assert code == 0 and f"revision {head_revision()}" in out
    code, out, _ = run("--db", url, "--json", "migrate")
    assert json.loads(out)["revision"] == head_revision()


def test_balance_human_and_json(db: str) -> None:
    """balance prints formatted money, or exact minor units with --json."""
    code, out, _ = run("--db", db, "balance", "user:1:wallet")
    assert code == 0 and "$37.02" in out
    code, out, _ = run("--db", db, "--json", "balance", "user:1:wallet")
    assert json.loads(out)["available_minor"] == 3702


def test_history_pages(db: str) -> None:
    """history shows newest first and hands out a cursor for the next page."""
    code, out, _ = run("--db", db, "history", "user:1:wallet", "--limit", "2")
    assert code == 0 and out.index("pack 2") < out.index("pack 1")
    cursor = out.split("--cursor ")[1].strip()
    code, out, _ = run("--db", db, "--json", "history", "user:1:wallet", "--cursor", cursor)
    assert [i["description"] for i in json.loads(out)["items"]] == ["pack 0"]


def test_trial_balance_and_verify(db: str) -> None:
    """trial-balance balances and verify finds nothing wrong: exit code 0."""
    code, out, _ = run("--db", db, "trial-balance")
    assert code == 0 and "balanced" in out
    code, out, err = run("--db", db, "verify")
    assert code == 0 and "ok" in out
    assert "verify" in err  # progress on stderr


def test_verify_problem_exit_code(db: str) -> None:
    """verify exits 1 and lists problems when a balance row was tampered with."""
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE spaktok_balances SET posted = posted + 1")
    engine.dispose()
    code, out, _ = run("--db", db, "--json", "-q", "verify")
    assert code == 1
    assert {p["check"] for p in json.loads(out)["problems"]} >= {"balances"}


def test_errors_are_one_line_with_stable_codes(db: str, tmp_path) -> None:
    """Unknown accounts exit 3, a missing schema 4, bad arguments 2; no tracebacks."""
    code, _, err = run("--db", db, "balance", "user:404:wallet")
    assert code == 3 and err.count("\n") == 1 and err.startswith("error:")
    code, _, err = run("--db", f"sqlite:///{tmp_path / 'empty.db'}", "balance", "user:1:wallet")
    assert code == 4 and "migrate" in err
    code, _, _ = run("--db", db, "balance", "not a code")
    assert code == 2
    code, _, _ = run("no-such-command")
    assert code == 2


def test_console_script_runs(tmp_path) -> None:
    """python -m spaktok_ledger is the same CLI, as a real process."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "spaktok_ledger", "--db", url, "migrate"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout


def test_demo_runs_and_balances(tmp_path) -> None:
    """The demo runs twice on the same file (it starts fresh) and ends balanced."""
    for _ in range(2):
        code, out, _ = run("demo", "--file", str(tmp_path / "demo.db"))
        assert code == 0, out
        assert "balanced: debits equal credits" in out
        assert "payout.paid -> paid" in out
        assert "webhook: clawed_back" in out
        assert "verify: ok" in out


def test_mature_earnings(tmp_path) -> None:
    """mature-earnings moves shares past their hold period and reports them."""
    from spaktok_ledger import Gift, GiftCatalogue, GiftEconomy
    from spaktok_ledger.testing import FakeClock

    url = f"sqlite:///{tmp_path / 'm.db'}"
    clock = FakeClock(datetime(2020, 1, 1, tzinfo=UTC))
    with Ledger(url, clock=clock) as ledger:
        economy = GiftEconomy(ledger, GiftCatalogue([Gift("rose", 10)]), hold_days=1, clock=clock)
        economy.setup()
        economy.register_streamer("bob")
        economy.credit_purchase("al", coins=100, price_usd_minor=100, idempotency_key="p")
        economy.send_gift("al", "bob", "rose", 2, idempotency_key="g")
    code, out, _ = run("--db", url, "--json", "mature-earnings")
    assert code == 0
    assert json.loads(out)["matured"][0]["amount_minor"] == 8
    code, out, _ = run("--db", url, "mature-earnings")
    assert "nothing to mature" in out


ECB_SAMPLE = str(Path(__file__).parent / "fixtures" / "fx" / "ecb-eurofxref-daily.xml")


def test_quote_preview_and_save(tmp_path) -> None:
    """quote prices a pack for a locale from a saved rates file, and --save stores it."""
    code, out, _ = run("quote", "fan", "--locale", "ja_JP", "--rates-file", ECB_SAMPLE)
    assert code == 0
    assert "￥3,211" in out
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run("--db", url, "migrate")
    code, out, _ = run("--db", url, "--json", "quote", "starter", "--currency", "EUR",
                       "--rates-file", ECB_SAMPLE, "--save")
    assert code == 0
    quote_id = json.loads(out)["id"]
    with Ledger(url) as ledger:
        from spaktok_ledger import QuoteStore

        assert QuoteStore(ledger).get(quote_id).currency == "EUR"
    code, _, err = run("quote", "nope", "--rates-file", ECB_SAMPLE)
    assert code == 3
    assert "nope" in err


def test_reconcile_payouts(tmp_path, monkeypatch) -> None:
    """reconcile-payouts books a transfer whose response was lost; exit 0 when all resolved."""
    from spaktok_ledger import (
        Gift,
        GiftCatalogue,
        GiftEconomy,
        PaymentProviderError,
        Payouts,
        StripeGateway,
    )
    from spaktok_ledger.testing import FakeStripe, stripe_client

    url = f"sqlite:///{tmp_path / 'r.db'}"
    with FakeStripe() as fake, Ledger(url) as ledger:
        economy = GiftEconomy(ledger, GiftCatalogue([Gift("rocket", 5000)]), hold_days=0)
        economy.setup()
        economy.register_streamer("bob")
        economy.credit_purchase("al", coins=50_000, price_usd_minor=50_000, idempotency_key="p")
        economy.send_gift("al", "bob", "rocket", 10, idempotency_key="g")
        payouts = Payouts(economy, StripeGateway(stripe_client(fake)), connect_webhook_secret="x")
        payouts.link_account("bob", fake.create_account(onboarded=True)["id"])
        fake.top_up(100_000)  # the gifts were funded outside Stripe
        fake.drop_next("POST", "/v1/transfers")
        with pytest.raises(PaymentProviderError):
            payouts.request_payout("bob", 6000, idempotency_key="p1")

        code, _, err = run("--db", url, "reconcile-payouts")
        assert code == 2
        assert "STRIPE_SECRET_KEY" in err
        monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_cli")
        monkeypatch.setenv("STRIPE_API_BASE", fake.url)
        code, out, _ = run("--db", url, "--json", "reconcile-payouts")
        assert code == 0
        (item,) = json.loads(out)["discrepancies"]
        assert (item["problem"], item["resolved"]) == ("transfer_not_recorded", True)
        code, out, _ = run("--db", url, "reconcile-payouts")
        assert "every payout agrees" in out


# -- the newcomer's papercuts (issue 16) ---------------------------------------------------


def test_global_options_before_or_after_the_command(db: str) -> None:
    """--json, -q, --db and --prefix work after the command as well as before it."""
    code, out, _ = run("balance", "user:1:wallet", "--db", db, "--json")
    assert code == 0 and json.loads(out)["available_minor"] == 3702
    code, out, err = run("--db", db, "verify", "-q", "--json")
    assert code == 0 and json.loads(out)["ok"] and err == ""
    code, _, err = run("--db", db, "balance", "user:1:wallet", "--prefix", "other_")
    assert code == 4 and "migrate" in err  # the later --prefix won


def test_read_only_commands_never_create_a_database(tmp_path) -> None:
    """A mistyped SQLite path is a one-line error (exit 4); no empty file is left behind."""
    missing = tmp_path / "mistyped.db"
    for argv in (["balance", "user:1:wallet"], ["verify"], ["trial-balance"],
                 ["history", "user:1:wallet"], ["export", "-o", str(tmp_path / "x.jsonl")]):
        code, out, err = run("--db", f"sqlite:///{missing}", *argv)
        assert code == 4, (argv, err)
        assert err.startswith("error: no SQLite database at") and "migrate" in err
        assert err.count("\n") == 1
        assert not missing.exists(), argv
    code, _, _ = run("--db", f"sqlite:///{missing}", "migrate")
    assert code == 0 and missing.exists()  # migrate is the command that creates it


def test_table_width_counts_east_asian_wide_characters() -> None:
    """Wide characters (￥, CJK) take two columns, so columns stay aligned on a terminal."""
    from spaktok_ledger.cli import display_width, table

    assert display_width("￥3,211") == 7
    assert display_width("ライブ") == 6
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    out = io.StringIO()
    table(out, ["gift", "price"], [["バラ", "￥3,211"], ["rose", "$19.99"]], right=[1])
    lines = out.getvalue().splitlines()
    assert [display_width(line) for line in lines] == [display_width(lines[1])] * 4
    assert lines[2].endswith("￥3,211") and lines[3].endswith(" $19.99")


def test_rates_print_with_sensible_digits() -> None:
    """Human output shows 6 significant digits (rounded half-even); --json keeps them all."""
    from decimal import Decimal

    from spaktok_ledger.cli import rate_text

    assert rate_text(Decimal("160.61653432975245213")) == "160.617"
    assert rate_text(Decimal("0.934143")) == "0.934143"
    assert rate_text(Decimal("16234.56")) == "16234.6"
    assert rate_text(Decimal("1500000.5")) == "1500000"  # integer digits are never cut
    code, out, _ = run("quote", "fan", "--locale", "ja_JP", "--rates-file", ECB_SAMPLE)
    assert code == 0 and "160.617 JPY/USD" in out and "160.6165343" not in out
    code, out, _ = run("quote", "fan", "--locale", "ja_JP", "--rates-file", ECB_SAMPLE, "--json")
    assert json.loads(out)["rate"].startswith("160.6165343")


def test_deprecated_environment_names_still_work(monkeypatch) -> None:
    """OXR_APP_ID is read when OPENEXCHANGERATES_APP_ID is unset, with a warning on stderr."""
    from spaktok_ledger.cli import ENV_OXR_APP_ID, Context, build_parser

    err = io.StringIO()
    ctx = Context(build_parser().parse_args(["trial-balance"]), io.StringIO(), err)
    monkeypatch.delenv(ENV_OXR_APP_ID, raising=False)
    monkeypatch.setenv("OXR_APP_ID", "old-id")
    assert ctx.env(ENV_OXR_APP_ID) == "old-id"
    assert "OXR_APP_ID is deprecated; set OPENEXCHANGERATES_APP_ID" in err.getvalue()
    monkeypatch.setenv(ENV_OXR_APP_ID, "new-id")
    assert ctx.env(ENV_OXR_APP_ID) == "new-id"
    monkeypatch.delenv(ENV_OXR_APP_ID)
    monkeypatch.delenv("OXR_APP_ID")
    code, _, err_text = run("quote", "fan", "--rates", "openexchangerates")
    assert code == 2 and "needs the OPENEXCHANGERATES_APP_ID environment variable" in err_text


def _without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``modules`` cannot be imported
    (as on a core-only install)."""
    blocker = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run(
        [sys.executable, "-c", blocker + code], capture_output=True, text=True, check=False
    )


def test_core_only_install_names_the_extra_for_demo_and_quote(tmp_path) -> None:
    """Without stripe/httpx, demo and quote end with one line naming the extra, no traceback."""
    cli = "from spaktok_ledger.cli import main\nsys.exit(main({argv!r}))\n"
    demo = _without(["stripe"], cli.format(argv=["demo", "--file", str(tmp_path / "d.db")]))
    assert demo.returncode == 2, demo.stderr
    assert "pip install 'spaktok-ledger[stripe]'" in demo.stderr
    assert "Traceback" not in demo.stderr
    quote = _without(["httpx"], cli.format(argv=["quote", "fan", "--rates", "ecb"]))
    assert quote.returncode == 2, quote.stderr
    assert "pip install 'spaktok-ledger[fx]'" in quote.stderr
    assert "Traceback" not in quote.stderr


def test_missing_psycopg_and_moneyed_name_their_extras() -> None:
    """A PostgreSQL URL without psycopg, and to_money without py-moneyed, name the extra."""
    pg = _without(
        ["psycopg"],
        "from spaktok_ledger import Ledger\n"
        "try:\n    Ledger('postgresql://u@127.0.0.1/db')\n"
        "except ModuleNotFoundError as exc:\n    print(exc.name, '|', exc)\n",
    )
    assert pg.stdout.startswith("psycopg |"), pg.stderr
    assert "pip install 'spaktok-ledger[postgres]'" in pg.stdout
    money = _without(
        ["moneyed"],
        "from spaktok_ledger import to_money\n"
        "try:\n    to_money(199, 'USD')\n"
        "except ImportError as exc:\n    print(exc)\n",
    )
    assert "pip install 'spaktok-ledger[moneyed]'" in money.stdout, money.stderr
    cli = _without(["psycopg"], "from spaktok_ledger.cli import main\n"
                   "sys.exit(main(['--db', 'postgresql://u@127.0.0.1/db', 'migrate']))\n")
    assert cli.returncode == 2 and "spaktok-ledger[postgres]" in cli.stderr, cli.stderr


def test_every_command_is_documented() -> None:
    """docs/cli.md lists every subcommand in its table and has a section for each."""
    from spaktok_ledger.cli import build_parser

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    commands = {c.dest for c in sub._choices_actions}
    assert {"quote", "reconcile-payouts", "migrate", "demo"} <= commands
    for command in commands:
        assert f"| [`{command}" in text, f"docs/cli.md: {command} is not in the command table"
        assert f"\n## {command}\n" in text, f"docs/cli.md: no section for {command}"
