"""How many messages a link may queue, where the messages are large.

ZeroMQ bounds a queue in messages (``transport.hwm``), not bytes. That suits the small
records between filter, match and enforce, but a scan part may be ``scan.message_bytes``
long: a thousand of them queued for a tree that falls behind would be gigabytes. So the
scan → tree link queues about two rounds' worth of a shard's argv budget at each end.
"""

from __future__ import annotations

from pipeline.config import Config

MIN_HWM = 4


def link_hwm(endpoint: str, config: Config) -> int:
    """The high-water mark (messages, each end) of the sockets of ``endpoint``."""
    if endpoint != "tree":
        return config.transport.hwm
    scan = config.scan
    parts = 2 * (scan.round_argv_bytes // scan.shards) // scan.message_bytes
    return max(MIN_HWM, min(config.transport.hwm, parts))
