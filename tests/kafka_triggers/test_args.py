"""What a Kafka message passes to its runnable, and the checks of a trigger's settings."""

from __future__ import annotations

import pytest

from gristmill.common.errors import InvalidRequest
from gristmill.common.kafka_triggers import check_topic, parse_connection
from gristmill.triggers.kafka.args import KafkaRecord, message_args, message_fields

RECORD = KafkaRecord(
    topic="orders",
    partition=2,
    offset=41,
    key=b"k",
    value=b'{"order_id": 7, "amount": 2.5, "key": "inner"}',
    headers=(("trace", b"abc"), ("empty", None)),
    timestamp=1_700_000_000_000,
)


def _schema(*names: str) -> dict[str, object]:
    return {"type": "object", "properties": {name: {} for name in names}}


def test_fields_of_a_message() -> None:
    fields = message_fields(RECORD)
    assert fields == {
        "msg": '{"order_id": 7, "amount": 2.5, "key": "inner"}',
        "value": {"order_id": 7, "amount": 2.5, "key": "inner"},
        "key": "k",
        "headers": {"trace": "abc", "empty": None},
        "topic": "orders",
        "partition": 2,
        "offset": 41,
        "timestamp": 1_700_000_000_000,
    }


def test_value_that_is_not_json_stays_text() -> None:
    record = KafkaRecord(topic="t", partition=0, offset=0, value=b"hello \xff")
    fields = message_fields(record)
    assert fields["msg"] == fields["value"] == "hello \ufffd"
    assert fields["key"] is None
    assert message_fields(KafkaRecord(topic="t", partition=0, offset=0, value=b"12"))["value"] == 12


def test_named_parameters_are_filled_from_fields_then_json() -> None:
    assert message_args(RECORD, _schema("msg")) == {"msg": message_fields(RECORD)["msg"]}
    assert message_args(RECORD, _schema("order_id", "amount", "topic")) == {
        "order_id": 7,
        "amount": 2.5,
        "topic": "orders",
    }
    # The message's own fields win over JSON fields of the same name.
    assert message_args(RECORD, _schema("key")) == {"key": "k"}
    assert message_args(RECORD, _schema()) == {}


def test_no_schema_gets_every_field() -> None:
    assert message_args(RECORD, None) == message_fields(RECORD)
    assert message_args(RECORD, {}) == message_fields(RECORD)


def test_topic_names() -> None:
    assert check_topic("a.b_c-1") == "a.b_c-1"
    for bad in ("", ".", "..", "a b", "a/b", "x" * 250, "é"):
        with pytest.raises(InvalidRequest):
            check_topic(bad)


def test_connections() -> None:
    assert parse_connection({"brokers": "a:1, b:2"}).brokers == ["a:1", "b:2"]
    sasl = parse_connection(
        {
            "brokers": ["a:1"],
            "security": {
                "label": "SASL_SSL",
                "mechanism": "SCRAM-SHA-256",
                "username": "u",
                "password": "p",
            },
        }
    )
    assert (sasl.security_protocol, sasl.sasl_mechanism, sasl.username) == (
        "SASL_SSL",
        "SCRAM-SHA-256",
        "u",
    )
    referenced = {
        "brokers": ["a:1"],
        "security": {"label": "SASL_PLAINTEXT", "username": "u", "password": "$var:u/admin/pw"},
    }
    assert parse_connection(referenced, allow_references=True).username == "u"
    for bad in (
        None,
        {"brokers": []},
        {"brokers": [1]},
        {"brokers": ["a:1"], "security": {"label": "KERBEROS"}},
        {"brokers": ["a:1"], "security": {"label": "SASL_PLAINTEXT"}},
    ):
        with pytest.raises(InvalidRequest):
            parse_connection(bad)
    assert parse_connection("$res:u/admin/other", allow_references=True).brokers == []
