"""How many messages a link may queue, where the messages are large.

ZeroMQ bounds a queue in messages (``transport.hwm``), not bytes. That suits the small
records between filter, match and enforce, but a scan part may be ``scan.message_bytes``
long: a thousand of them queued for a tree that falls behind would be gigabytes. So the
scan → tree link queues about two rounds' worth of a shard's argv budget at each end, and
the filter → match link is kept short in front of match's own fair queue.
"""

from __future__ import annotations

from pipeline.configschema import Config

MIN_HWM = 4
# filter -> match: short, so what waits for match waits in match's fair queue (stages/
# fairqueue.py), not in a first-come pipe in front of it.
MATCH_LINK_HWM = 64


def shard_argv_budget(config: Config) -> int:
    """A shard's share of a round's argv: ``scan.round_argv_bytes``, but never more than
    half a frame (a round travels as one frame after tree), shared by the shards."""
    budget = min(config.scan.round_argv_bytes, config.transport.max_message_bytes // 2)
    return max(1, budget // config.scan.shards)


def link_hwm(endpoint: str, config: Config) -> int:
    """The high-water mark (messages, each end) of the sockets of ``endpoint``."""
    if endpoint == "match":
        return min(config.transport.hwm, MATCH_LINK_HWM)
    if endpoint != "tree":
        return config.transport.hwm
    parts = 2 * shard_argv_budget(config) // config.scan.message_bytes
    return max(MIN_HWM, min(config.transport.hwm, parts))
