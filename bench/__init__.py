"""The ledger's benchmark: its speed as ratios against the physical limit and the replaced design.

    python -m bench --database-url postgresql+psycopg2://postgres@127.0.0.1:5432/bench \\
        --database-url sqlite:////var/tmp/ledger-bench/bench.db --write-docs docs/BENCHMARKS.md
    python -m bench --database-url sqlite:////tmp/bench.db --quick   # smoke test, < 2 min

``run(database_url, *, quick=False, sizes=None, charges=None, only=None,
write_docs=None, console=None, command=None) -> list[Row]`` is the entry point
(``ledger bench`` calls it). Each scenario gets an empty store; baselines run
first in the same run on the same connection type; consistency is checked
every time and an inconsistency raises :class:`BenchmarkFailed`; speed never does.
"""

from bench.rows import BenchmarkFailed, Inconsistent, Row, Target
from bench.runner import SCENARIOS, run
from bench.sizes import Sizes

__all__ = ["BenchmarkFailed", "Inconsistent", "Row", "SCENARIOS", "Sizes", "Target", "run"]
