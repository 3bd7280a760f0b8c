/*
 * The shipping service of choreo's order saga, written the way a Java team would with the Apache
 * Kafka client (org.apache.kafka:kafka-clients) and Apache Avro (org.apache.avro:avro).
 *
 * What it shows: choreo's wire contract is plain Kafka.
 *   - key:     the order id (UTF-8), partitioned by the Java client's default partitioner
 *              (murmur2 of the key bytes), the one choreo's own producers imitate;
 *   - value:   Avro binary in the Confluent framing (byte 0, 4-byte big-endian schema id, body),
 *              subjects by TopicRecordNameStrategy ("<topic>-<full name>"). Confluent's
 *              KafkaAvroSerializer is not on Maven Central, so ConfluentAvro.java holds the small
 *              Serializer/Deserializer pair and registry client a team would write instead;
 *   - headers: the CloudEvents Kafka binary binding (ce_*), plus ce_correlationid,
 *              ce_causationid and the W3C traceparent.
 *
 * Usage:
 *   serve BOOTSTRAP REGISTRY_URL ORDER_ID
 *       wait on `shipping` for the coordinator's ShipmentRequested of ORDER_ID, answer with a
 *       ShipmentScheduled, wait on `orders` for the OrderConfirmed, print one JSON line.
 *   partitions BOOTSTRAP TOPIC KEY...
 *       produce one record per key (value = the key's bytes) and print {"<key>": partition}.
 *
 * The .avsc files are read from -Dchoreo.schemas.dir (setup.sh's wrapper points it at the
 * repository's schemas/avro); logs go to stderr, stdout carries only the JSON line.
 */
package io.choreo.clients;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class ShippingService {
    private static final String ROLE = "shipping";
    private static final String SOURCE = "/services/shipping-java";
    private static final String NS = "io.choreo.orders.";
    private static final Duration DEADLINE = Duration.ofSeconds(120);
    private static final SecureRandom RANDOM = new SecureRandom();
    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] args) {
        // slf4j-simple: warnings and errors only, on stderr (set before any Kafka class logs).
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        System.setProperty("org.slf4j.simpleLogger.logFile", "System.err");
        try {
            if (args.length == 4 && args[0].equals("serve")) {
                serve(args[1], args[2], args[3]);
            } else if (args.length >= 4 && args[0].equals("partitions")) {
                partitions(args[1], args[2], List.of(args).subList(3, args.length));
            } else {
                System.err.println("usage: serve BOOTSTRAP REGISTRY_URL ORDER_ID\n"
                        + "       partitions BOOTSTRAP TOPIC KEY...");
                System.exit(2);
            }
        } catch (Exception e) {
            System.err.println("shipping-java: " + (e.getMessage() != null ? e.getMessage() : e));
            System.exit(1);
        }
        System.exit(0);
    }

    /** acks=all and idempotence; no partitioner set: the built-in one is murmur2 of the key. */
    private static Properties producerConfig(String bootstrap) {
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        config.put(ProducerConfig.CLIENT_ID_CONFIG, ROLE + "-java");
        return config;
    }

    static void serve(String bootstrap, String registryUrl, String orderId) throws Exception {
        long deadline = System.nanoTime() + DEADLINE.toNanos();
        var registry = new ConfluentAvro.RegistryClient(registryUrl);
        var avro = new ConfluentAvro.AvroDeserializer(registry);
        Schema scheduled = new Schema.Parser().parse(Files.readString(
                Path.of(System.getProperty("choreo.schemas.dir", "schemas/avro"),
                        "shipment_scheduled.v1.avsc")));

        Properties consumerConfig = new Properties();
        consumerConfig.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        consumerConfig.put(ConsumerConfig.GROUP_ID_CONFIG,
                ROLE + "-java-" + HexFormat.of().formatHex(randomBytes(4)));
        consumerConfig.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        consumerConfig.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        consumerConfig.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);

        // Values are taken as bytes and decoded only for the records we pick, so that a record of
        // some other shape on these topics cannot stall poll() with a deserialization error.
        try (var consumer = new KafkaConsumer<>(consumerConfig,
                     new StringDeserializer(), new ByteArrayDeserializer());
             var producer = new KafkaProducer<>(producerConfig(bootstrap),
                     new StringSerializer(), new ConfluentAvro.AvroSerializer(registry))) {
            consumer.subscribe(List.of("shipping", "orders"));
            Map<String, Object> received = null;
            Map<String, Object> produced = null;
            while (System.nanoTime() < deadline) {
                for (ConsumerRecord<String, byte[]> record : consumer.poll(Duration.ofMillis(500))) {
                    if (!orderId.equals(record.key())) {
                        continue;
                    }
                    String type = header(record.headers(), "ce_type");
                    if (received == null && record.topic().equals("shipping")
                            && (NS + "ShipmentRequested").equals(type)) {
                        GenericRecord request = avro.deserialize(record.topic(), record.value());
                        received = describe(record, request);

                        GenericRecord answer = new GenericRecordBuilder(scheduled)
                                .set("order_id", orderId)
                                .set("shipment_id", "ship-java-" + orderId)
                                .set("carrier", "java-post")
                                .set("estimated_delivery_ms",
                                        Instant.now().plus(Duration.ofDays(2)).toEpochMilli())
                                .build();
                        String ceId = UUID.randomUUID().toString();
                        Headers headers = cloudEventHeaders(ceId, "ShipmentScheduled", orderId,
                                header(record.headers(), "ce_id"),
                                header(record.headers(), "traceparent"));
                        RecordMetadata sent = producer.send(new ProducerRecord<>(
                                        "shipping", null, orderId, answer, headers))
                                .get(remainingMillis(deadline), TimeUnit.MILLISECONDS);
                        produced = new LinkedHashMap<>();
                        produced.put("topic", sent.topic());
                        produced.put("partition", sent.partition());
                        produced.put("offset", sent.offset());
                        produced.put("ce_id", ceId);
                        System.err.printf("shipping-java: answered %s with ShipmentScheduled at %s-%d@%d%n",
                                orderId, sent.topic(), sent.partition(), sent.offset());
                    } else if (produced != null && record.topic().equals("orders")
                            && (NS + "OrderConfirmed").equals(type)) {
                        Map<String, Object> confirmed = describe(record,
                                avro.deserialize(record.topic(), record.value()));
                        confirmed.put("partition", record.partition());
                        Map<String, Object> result = new LinkedHashMap<>();
                        result.put("received", received);
                        result.put("produced", produced);
                        result.put("confirmed", confirmed);
                        System.out.println(JSON.writeValueAsString(result));
                        System.out.flush();
                        return;
                    }
                }
            }
            throw new IllegalStateException("timed out after " + DEADLINE.toSeconds() + " s: "
                    + (received == null ? "no ShipmentRequested for " + orderId + " on `shipping`"
                                        : "no OrderConfirmed for " + orderId + " on `orders`"));
        }
    }

    static void partitions(String bootstrap, String topic, List<String> keys) throws Exception {
        Map<String, Object> result = new LinkedHashMap<>();
        try (var producer = new KafkaProducer<>(producerConfig(bootstrap),
                new StringSerializer(), new ByteArraySerializer())) {
            for (String key : keys) {
                RecordMetadata sent = producer.send(new ProducerRecord<>(
                        topic, key, key.getBytes(StandardCharsets.UTF_8))).get(60, TimeUnit.SECONDS);
                result.put(key, sent.partition());
            }
        }
        System.out.println(JSON.writeValueAsString(result));
    }

    /** The CloudEvents Kafka binary binding, plus correlation, causation and trace context. */
    private static Headers cloudEventHeaders(String ceId, String name, String orderId,
                                             String causationId, String parentTraceparent) {
        Headers headers = new RecordHeaders();
        put(headers, "ce_specversion", "1.0");
        put(headers, "ce_id", ceId);
        put(headers, "ce_source", SOURCE);
        put(headers, "ce_type", NS + name);
        put(headers, "ce_time", Instant.now().truncatedTo(ChronoUnit.MILLIS).toString());
        put(headers, "ce_subject", orderId);
        put(headers, "ce_correlationid", orderId);
        if (causationId != null) {
            put(headers, "ce_causationid", causationId);
        }
        put(headers, "content-type", "application/avro");
        put(headers, "traceparent", childTraceparent(parentTraceparent));
        return headers;
    }

    /** W3C trace context: keep the parent's trace id (or start a trace), new span id, sampled. */
    private static String childTraceparent(String parent) {
        String traceId = null;
        if (parent != null) {
            String[] parts = parent.trim().split("-");
            if (parts.length >= 4 && parts[1].matches("[0-9a-f]{32}")
                    && !parts[1].equals("0".repeat(32))) {
                traceId = parts[1];
            }
        }
        if (traceId == null) {
            traceId = HexFormat.of().formatHex(randomBytes(16));
        }
        return "00-" + traceId + "-" + HexFormat.of().formatHex(randomBytes(8)) + "-01";
    }

    /** {"value": decoded, "headers": {name: text}, "schema_id": id} of a picked record. */
    private static Map<String, Object> describe(ConsumerRecord<String, byte[]> record,
                                                GenericRecord value) {
        Map<String, Object> headers = new LinkedHashMap<>();
        for (Header h : record.headers()) {
            headers.put(h.key(), h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8));
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("value", toJson(value));
        out.put("headers", headers);
        out.put("schema_id", ConfluentAvro.schemaId(record.value()));
        return out;
    }

    /** Avro generic data as plain Java values Jackson writes as JSON (Utf8 -> String, ...). */
    private static Object toJson(Object datum) {
        if (datum instanceof GenericRecord record) {
            Map<String, Object> fields = new LinkedHashMap<>();
            for (Schema.Field f : record.getSchema().getFields()) {
                fields.put(f.name(), toJson(record.get(f.pos())));
            }
            return fields;
        } else if (datum instanceof Map<?, ?> map) {
            Map<String, Object> entries = new LinkedHashMap<>();
            map.forEach((k, v) -> entries.put(k.toString(), toJson(v)));
            return entries;
        } else if (datum instanceof List<?> list) {
            List<Object> items = new ArrayList<>();
            list.forEach(item -> items.add(toJson(item)));
            return items;
        } else if (datum instanceof CharSequence || datum instanceof GenericData.EnumSymbol) {
            return datum.toString();
        } else if (datum instanceof ByteBuffer bytes) {
            byte[] copy = new byte[bytes.remaining()];
            bytes.duplicate().get(copy);
            return copy; // Jackson writes byte[] as base64
        } else if (datum instanceof GenericFixed fixed) {
            return fixed.bytes();
        }
        return datum; // null, Boolean, Integer, Long, Float, Double
    }

    private static void put(Headers headers, String key, String value) {
        headers.add(key, value.getBytes(StandardCharsets.UTF_8));
    }

    private static String header(Headers headers, String key) {
        Header h = headers.lastHeader(key);
        return h == null || h.value() == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    private static long remainingMillis(long deadline) {
        return Math.max(1, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime()));
    }

    private static byte[] randomBytes(int n) {
        byte[] bytes = new byte[n];
        RANDOM.nextBytes(bytes);
        return bytes;
    }
}
