"""What the example apps leave to an admin tool: ``python -m examples.common.admin``.

The HTTP API is for viewers and streamers; registering a streamer and setting
up their Stripe Connect account are back-office steps. This command does them
through the library, on the database and Stripe the apps use (the same
environment variables)::

    python -m examples.common.admin register-streamer bob          # + a Connect account
    python -m examples.common.admin register-streamer lena --streamer-bps 5000
    python -m examples.common.admin streamer bob                   # KYC and earnings
"""

from __future__ import annotations

import argparse
import json
import sys

from examples.common.services import ConfigError, build_services

from spaktok_ledger import LedgerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.common.admin")
    commands = parser.add_subparsers(dest="command", required=True)
    register = commands.add_parser(
        "register-streamer", help="let a user receive gifts and open their Connect account"
    )
    register.add_argument("streamer_id")
    register.add_argument("--streamer-bps", type=int, default=None, help="share (default 4000)")
    register.add_argument("--country", default="US", help="Connect account country")
    show = commands.add_parser("streamer", help="a streamer's Connect account and earnings")
    show.add_argument("streamer_id")
    args = parser.parse_args(argv)

    try:
        services = build_services()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "register-streamer":
            streamer = services.economy.register_streamer(
                args.streamer_id, streamer_bps=args.streamer_bps
            )
            account = services.payouts.create_express_account(
                streamer.streamer_id, country=args.country
            )
            base = services.settings.checkout_cancel_url
            link = services.payouts.onboarding_link(streamer.streamer_id, base, base)
            print(f"streamer {streamer.streamer_id} registered")
            print(f"Stripe Connect account: {account.account_id} ({account.kyc_status})")
            print(f"onboarding (KYC) link for the streamer: {link}")
            print("(the local fake_stripe helper completes onboarding by itself)")
        else:
            linked = services.payouts.account_status(args.streamer_id)
            earnings = services.economy.earnings(args.streamer_id)
            summary = {
                "earnings": earnings.to_dict(),
                "account": linked.to_dict() if linked else None,
            }
            print(json.dumps(summary, indent=2))
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
