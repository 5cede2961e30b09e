"""``python -m bench`` (``make bench``): every benchmark in turn."""

import sys

from bench import match_throughput

sys.exit(match_throughput.main([]))
