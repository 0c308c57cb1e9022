"""How much HTTP/2 state osqueue lets each gRPC connection keep.

h2 (under grpclib) records how every closed stream of a connection ended, so that a
frame arriving late for it gets the right answer, and forgets a record only after 2**16
newer ones: about 12 MB of RSS on every long-lived connection, reached after 65,536
calls on it (a worker heartbeating and completing jobs gets there in an hour or two).
Measured with ``benchmarks/rss_soak.py``: a broker under balanced load grew ~0.5
MB/min until its connections reached the cap, and stays flat at ~54 MB with this limit.
Upstream: python-hyper/h2#1163, vmagamedov/grpclib#31.
"""

from __future__ import annotations

import h2.connection

#: How many closed streams a connection remembers. Late frames trail a stream's end by
#: about a round trip, so a thousand calls of memory is ample; late RST_STREAM,
#: WINDOW_UPDATE and DATA for forgotten streams are still answered safely by h2.
CLOSED_STREAMS_REMEMBERED = 1024


def limit_closed_streams(remembered: int = CLOSED_STREAMS_REMEMBERED) -> None:
    """Bound the closed-stream records of every h2 connection in this process.

    Process-wide (h2 has no per-connection setting that grpclib passes on), and it only
    ever lowers the limit. The broker and the remote clients (:mod:`osqueue_io.connection`) call it.
    """
    connection = h2.connection.H2Connection
    connection.MAX_CLOSED_STREAMS = min(connection.MAX_CLOSED_STREAMS, remembered)
