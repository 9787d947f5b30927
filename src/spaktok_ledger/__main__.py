"""``python -m spaktok_ledger``: the same as the ``spaktok-ledger`` command."""

import sys

from spaktok_ledger.cli import main

sys.exit(main())
