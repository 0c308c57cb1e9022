"""Who owns the state object: the fencing record every broker writes on takeover."""

from __future__ import annotations

import attrs


@attrs.frozen
class Owner:
    """The broker that owns the state object.

    ``epoch`` increases on every takeover; a broker that reads a newer epoch than its
    own has been replaced. ``incarnation`` is unique per broker process (the runtime
    supplies it), so two brokers with the same ``identity`` are still told apart.
    ``address`` lets clients discover the broker; ``released`` is set by a clean
    shutdown. ``lease`` (seconds, schema 4) is the owner's promise to change the state
    object at least that often while it lives (docs/high-availability.md): a standby that
    sees no new version for that long takes over. None: no such promise.
    """

    identity: str
    incarnation: str
    epoch: int
    address: str | None = None
    released: bool = False
    lease: float | None = None
