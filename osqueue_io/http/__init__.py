"""The broker's HTTP layer: Prometheus metrics and the web dashboard (aiohttp).

The broker process serves them beside gRPC on listeners of their own
(``--metrics-listen``, ``--http-listen``; :mod:`osqueue_io.server.cli`). Files, one
concept each: ``monitor`` (the runtime being served, and counters carried across runtimes),
``group_monitor`` (a scale-out group member's runtimes and its group), ``metrics`` (the
Prometheus collector), ``dashboard`` (pages and actions, with ``templates/`` and
``static/``), ``archive`` (reading the archive by time bucket), ``params`` (bounded
query parameters), ``access`` (which routes read and which change the queue, for an auth
middleware), ``csrf`` (the form guard), ``app`` (the aiohttp application), ``listener``
(one listening address). Metrics and their alerts are documented in docs/operations.md.
"""

from osqueue_io.http.access import ADMIN, READ, Access, access_of, required_access
from osqueue_io.http.app import create_app
from osqueue_io.http.csrf import FormGuard
from osqueue_io.http.listener import HttpListener
from osqueue_io.http.metrics import broker_registry
from osqueue_io.http.monitor import BrokerMonitor

__all__ = [
    "ADMIN",
    "READ",
    "Access",
    "BrokerMonitor",
    "FormGuard",
    "HttpListener",
    "access_of",
    "broker_registry",
    "create_app",
    "required_access",
]
