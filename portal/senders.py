"""How messages leave the portal: the inbox (always), e-mail over SMTP and SMS over a store's HTTP gateway when
configured. `configured(config)` says which channels are on and gives the outbox its senders."""
from __future__ import annotations

from . import messaging


def configured(config) -> tuple[messaging.Channels, dict[str, messaging.Sender]]:
    """The channels in use and a sender for each (the inbox only, until e-mail and SMS are set up)."""
    return messaging.Channels(), {"inbox": messaging.deliver_to_inbox}
