"""Speaks choreo's wire contract with the official Confluent client and Avro serializer.

    produce BOOTSTRAP REGISTRY ORDER_ID   publish an OrderPlaced (v2) with CloudEvents headers
    consume BOOTSTRAP REGISTRY ORDER_ID   read PaymentAuthorized events until ORDER_ID's arrives;
                                          print it and its headers as JSON
    confirmed BOOTSTRAP REGISTRY ORDER_ID read `orders` until the coordinator's OrderConfirmed for
                                          ORDER_ID arrives; print it and its headers as JSON
    partitions BOOTSTRAP TOPIC KEY...     produce one record per key; print {key: partition}
"""
import datetime
import json
import sys
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMAS = __file__.rsplit("/", 3)[0] + "/schemas/avro/"
# Idempotent, acks=all, and the Java client's partitioner: keys land where choreo puts them.
PRODUCER = {"partitioner": "murmur2_random", "enable.idempotence": True, "acks": "all"}


def produce(bootstrap, registry_url, order_id):
    registry = SchemaRegistryClient({"url": registry_url})
    schema = open(SCHEMAS + "order_placed.v2.avsc").read()
    serialize = AvroSerializer(
        registry, schema, conf={"subject.name.strategy": topic_record_subject_name_strategy}
    )
    event = {
        "order_id": order_id,
        "customer_id": "py-customer",
        "items": [{"sku": "sku-py", "quantity": 2, "unit_price": {"amount_minor": 750, "currency": "EUR"}}],
        "total": {"amount_minor": 1500, "currency": "EUR"},
        "shipping_address": "1 Python Street",
        "channel": "python",
    }
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    producer.produce(
        "orders",
        key=order_id,
        value=serialize(event, SerializationContext("orders", MessageField.VALUE)),
        headers={
            "ce_specversion": "1.0",
            "ce_id": str(uuid.uuid4()),
            "ce_source": "/services/orders-python",
            "ce_type": "io.choreo.orders.OrderPlaced",
            "ce_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "ce_subject": order_id,
            "ce_correlationid": order_id,
            "content-type": "application/avro",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        },
    )
    left = producer.flush(30)
    if left:
        sys.exit(f"{left} record(s) not delivered")


def consume(bootstrap, registry_url, order_id):
    await_event(bootstrap, registry_url, order_id, "payments", "io.choreo.orders.PaymentAuthorized")


def confirmed(bootstrap, registry_url, order_id):
    await_event(bootstrap, registry_url, order_id, "orders", "io.choreo.orders.OrderConfirmed")


def await_event(bootstrap, registry_url, order_id, topic, ce_type):
    registry = SchemaRegistryClient({"url": registry_url})
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "python-" + str(uuid.uuid4()),
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe([topic])
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=120)
    while datetime.datetime.now() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        if msg.key() != order_id.encode() or headers.get("ce_type") != ce_type:
            continue
        value = deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE))
        print(json.dumps({
            "value": value,
            "headers": headers,
            "magic": msg.value()[0],
            "schema_id": int.from_bytes(msg.value()[1:5], "big"),
            "partition": msg.partition(),
        }))
        consumer.close()
        return
    sys.exit(f"no {ce_type} for {order_id} on {topic} within 120 s")


def partitions(bootstrap, topic, keys):
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER})
    landed = {}

    def delivered(err, msg):
        if err is not None:
            sys.exit(f"delivery failed: {err}")
        landed[msg.key().decode()] = msg.partition()

    for key in keys:
        producer.produce(topic, key=key, value=key.encode(), on_delivery=delivered)
    if producer.flush(30):
        sys.exit("records not delivered")
    print(json.dumps(landed))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "partitions":
        partitions(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        bootstrap, registry_url, order_id = sys.argv[2:5]
        {"produce": produce, "consume": consume, "confirmed": confirmed}[command](
            bootstrap, registry_url, order_id
        )
