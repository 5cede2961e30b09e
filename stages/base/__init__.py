"""The base floor: records, the stage contract, the meter and its metric catalog, exit codes.

It imports nothing of procsmith's above it (a test enforces this): stage logic in ``stages``
is built on it, and ``pipeline`` (runner, transport, supervisor, CLI) on both.
"""
