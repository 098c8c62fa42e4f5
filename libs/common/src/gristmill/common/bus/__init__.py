"""The bus: one small interface, two transports.

* :mod:`gristmill.common.bus.inprocess` — standalone: ``publish`` hands the batch to
  the registered consumer and returns after it committed (to Postgres).
* :mod:`gristmill.common.bus.kafka` — distributed: aiokafka, ``acks=all``, offsets
  committed manually only after the handler returned (after its Postgres commit).

Delivery is at-least-once; handlers must be idempotent.
"""

from gristmill.common.bus.base import Bus, Handler, Message

__all__ = ["Bus", "Handler", "Message"]
