"""``python -m ledger.cli``: the same as the ``ledger`` script."""

from ledger.cli import main

main()
