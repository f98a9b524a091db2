"""The ``modbind`` command line: one module per command group."""
