"""Simulated workloads for the demo, the tests and the benchmarks, in one place.

Simulated workspaces on this machine's real /proc, harmless stand-in miners, fake procfs
trees on disk, and a harness that runs the real pipeline as subprocesses. Built on
``stages`` (to read procfs); ``pipeline`` is only ever run as a command, never imported.
"""
