"""What an HTTP/2 connection remembers: bounded, however many calls go over it.

h2 keeps a record of how every closed stream ended (to answer late frames correctly),
by default for the last 2**16 streams of each connection: ~12 MB on every long-lived
worker connection (measured with benchmarks/rss_soak.py: the broker RSS "creep" of
hardening item 11, which levelled off only once every connection reached the cap). The
broker and the worker bound it with ``limit_closed_streams``. This test reads h2's
record directly: it is the very thing being bounded, and h2 offers no public view of it.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from osqueue_io.http2 import CLOSED_STREAMS_REMEMBERED, limit_closed_streams


def connected_pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def unary_calls(
    client: h2.connection.H2Connection, server: h2.connection.H2Connection, n: int
) -> None:
    request = [(":method", "POST"), (":scheme", "http"), (":path", "/s/M"), (":authority", "x")]
    for _ in range(n):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, request, end_stream=True)
        for event in server.receive_data(client.data_to_send()):
            if isinstance(event, h2.events.RequestReceived):
                server.send_headers(event.stream_id, [(":status", "200")], end_stream=True)
        client.receive_data(server.data_to_send())


def test_a_connection_remembers_a_bounded_number_of_closed_streams() -> None:
    assert "MAX_CLOSED_STREAMS" in vars(h2.connection.H2Connection), "h2 still has the knob"
    limit_closed_streams()
    client, server = connected_pair()
    unary_calls(client, server, 3 * CLOSED_STREAMS_REMEMBERED)
    for side in (client, server):
        remembered = len(side._closed_streams)
        assert CLOSED_STREAMS_REMEMBERED // 2 <= remembered <= CLOSED_STREAMS_REMEMBERED


def test_the_limit_only_ever_goes_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2.connection.H2Connection, "MAX_CLOSED_STREAMS", 2**16)  # h2's own
    limit_closed_streams(10)
    limit_closed_streams(5000)
    assert h2.connection.H2Connection.MAX_CLOSED_STREAMS == 10
