"""Speaks choreo's wire contract with the official Confluent client and Avro serializer.

    produce BOOTSTRAP REGISTRY ORDER_ID   publish an OrderPlaced (v2) with CloudEvents headers
    consume BOOTSTRAP REGISTRY ORDER_ID   read PaymentAuthorized events until ORDER_ID's arrives;
                                          print it and its headers as JSON
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
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
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
    registry = SchemaRegistryClient({"url": registry_url})
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "python-" + str(uuid.uuid4()),
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe(["payments"])
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
    while datetime.datetime.now() < deadline:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        if msg.key() != order_id.encode():
            continue
        value = deserialize(msg.value(), SerializationContext("payments", MessageField.VALUE))
        headers = {k: v.decode() for k, v in (msg.headers() or [])}
        print(json.dumps({"value": value, "headers": headers, "magic": msg.value()[0]}))
        consumer.close()
        return
    sys.exit(f"no PaymentAuthorized for {order_id} within 60 s")


if __name__ == "__main__":
    command, bootstrap, registry_url, order_id = sys.argv[1:5]
    {"produce": produce, "consume": consume}[command](bootstrap, registry_url, order_id)
