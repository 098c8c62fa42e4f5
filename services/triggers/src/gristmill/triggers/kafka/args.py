"""What a Kafka message passes to the script or flow it runs.

Every message offers these fields:

========== ==========================================================================
``msg``        the value as text (UTF-8; invalid bytes replaced): Windmill's argument
``value``      the value decoded as JSON when it is JSON, else the text
``key``        the key as text, or ``None``
``headers``    ``{name: text}`` (a name sent twice keeps its last value)
``topic``      the topic
``partition``  the partition
``offset``     the offset
``timestamp``  the record's timestamp (milliseconds since the epoch), or ``None``
========== ==========================================================================

A runnable whose input schema declares parameters gets those of its parameters that
these names fill, and, when the value is a JSON object, its fields fill the other
parameters of the same names (``def main(order_id: int, amount: float)`` receives
``{"order_id": 1, "amount": 2.5}`` as ``order_id=1, amount=2.5``). The names above
always mean the message's own fields (a JSON field named ``key`` is read as
``value["key"]``). A runnable without declared parameters (no schema) gets every
field. The arguments are then checked against the schema like any run's, so a
message that lacks a required parameter, or has one of the wrong type, is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

__all__ = ["MESSAGE_FIELDS", "KafkaRecord", "message_args", "message_fields"]

MESSAGE_FIELDS: Final = (
    "msg",
    "value",
    "key",
    "headers",
    "topic",
    "partition",
    "offset",
    "timestamp",
)
_decode_json = msgspec.json.Decoder()


class KafkaRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One consumed record, as the consumer read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: Sequence[tuple[str, bytes | None]] = ()
    timestamp: int | None = None


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def message_fields(record: KafkaRecord) -> dict[str, Any]:
    """Every field a message offers (see the module's table)."""
    text = _text(record.value) or ""
    value: Any = text
    if record.value:
        try:
            value = _decode_json.decode(record.value)
        except msgspec.DecodeError:
            value = text
    return {
        "msg": text,
        "value": value,
        "key": _text(record.key),
        "headers": {name: _text(data) for name, data in record.headers},
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }


def message_args(record: KafkaRecord, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments of the run a message starts, before the schema's checks."""
    fields = message_fields(record)
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return fields
    args: dict[str, Any] = {}
    value = fields["value"]
    if isinstance(value, dict):
        args.update(
            {
                name: item
                for name, item in value.items()
                if name in properties and name not in MESSAGE_FIELDS
            }
        )
    args.update({name: item for name, item in fields.items() if name in properties})
    return args
