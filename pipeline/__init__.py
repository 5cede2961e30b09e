"""Wiring, transport, config, supervision and the command line of procsmith."""
