"""The ledger's entry points: the ``ledger`` command, the HTTP application and the demo.

The one package that wires the write side (``ledger``), the read side
(``projections``) and the background side (``jobs``) together; none of
those imports it.
"""
