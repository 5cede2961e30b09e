"""The process exit codes of every procsmith command (SPEC §4)."""

OK = 0
FAILURE = 1  # anything else: a crash loop given up on, a failed check
USAGE = 2  # bad usage, bad config, bad signature file
