"""kombu's QoS, settling each message on the server: ack, redeliver or terminate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kombu.transport import virtual

if TYPE_CHECKING:
    from .transport import Channel


class QoS(virtual.QoS):
    """Settles messages on the server: ack, redeliver or terminate."""

    channel: Channel

    def ack(self, delivery_tag: str) -> None:
        self.channel._settle(delivery_tag, "ack")
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.channel._settle(delivery_tag, "nak" if requeue else "term")
        self._quick_ack(delivery_tag)

    def restore_unacked(self) -> list[Any]:
        """Hand every message still held back to the server, for redelivery now."""
        self._flush()
        for tag in list(self._delivered):
            self.channel._settle(tag, "nak")
        self._delivered.clear()
        return []
