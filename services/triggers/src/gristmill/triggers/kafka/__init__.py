"""Kafka triggers: each message of a trigger's topics runs its script or flow."""

from gristmill.triggers.kafka.args import MESSAGE_FIELDS, KafkaRecord, message_args
from gristmill.triggers.kafka.consumer import ConsumerSettings, TriggerConsumer, TriggerSpec
from gristmill.triggers.kafka.source import KafkaTriggerSource, SourceSettings, default_server_id

__all__ = [
    "MESSAGE_FIELDS",
    "ConsumerSettings",
    "KafkaRecord",
    "KafkaTriggerSource",
    "SourceSettings",
    "TriggerConsumer",
    "TriggerSpec",
    "default_server_id",
    "message_args",
]
