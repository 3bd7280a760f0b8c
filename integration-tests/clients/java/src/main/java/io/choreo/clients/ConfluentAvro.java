package io.choreo.clients;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serializer;

/**
 * The Confluent wire format (byte 0, 4-byte big-endian schema id, Avro binary body) as a Kafka
 * {@link Serializer}/{@link Deserializer} pair over Apache Avro's GenericDatumWriter/Reader, with
 * a tiny Schema Registry client on java.net.http.
 *
 * <p>Confluent's own KafkaAvroSerializer/KafkaAvroDeserializer would do the same (and work
 * against choreo's registry), but they are published only in Confluent's Maven repository, not
 * on Maven Central; a team restricted to Central writes this small pair instead. It behaves like
 * the stock serializer configured with {@code auto.register.schemas=false, use.latest.version=false}
 * and TopicRecordNameStrategy: the schema id is LOOKED UP (never registered) under the subject
 * {@code <topic>-<record full name>}.
 */
public final class ConfluentAvro {
    private static final byte MAGIC = 0;
    private static final ObjectMapper JSON = new ObjectMapper();

    private ConfluentAvro() {}

    /** The schema id in a Confluent-framed value (the 4 bytes after the magic byte). */
    static int schemaId(byte[] framed) {
        if (framed == null || framed.length < 5 || framed[0] != MAGIC) {
            throw new SerializationException("not a Confluent-framed Avro value");
        }
        return ByteBuffer.wrap(framed, 1, 4).getInt();
    }

    /** The two registry calls a serde needs, each answer cached for the life of the process. */
    public static final class RegistryClient {
        private final String baseUrl;
        private final HttpClient http =
                HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
        private final Map<String, Integer> idsBySubjectAndSchema = new ConcurrentHashMap<>();
        private final Map<Integer, Schema> schemasById = new ConcurrentHashMap<>();

        public RegistryClient(String baseUrl) {
            this.baseUrl = baseUrl.replaceAll("/+$", "");
        }

        /** {@code POST /subjects/<subject>} {"schema": ...}: the id of that schema under that subject. */
        int lookUp(String subject, Schema schema) {
            String text = schema.toString();
            return idsBySubjectAndSchema.computeIfAbsent(subject + '\n' + text, k -> {
                String body = JSON.createObjectNode().put("schema", text).toString();
                JsonNode answer = call(HttpRequest.newBuilder(uri(
                                "/subjects/" + URLEncoder.encode(subject, StandardCharsets.UTF_8)))
                        .POST(HttpRequest.BodyPublishers.ofString(body)));
                return answer.get("id").asInt();
            });
        }

        /** {@code GET /schemas/ids/<id>}: the writer schema of a framed value. */
        Schema byId(int id) {
            return schemasById.computeIfAbsent(id, k -> new Schema.Parser()
                    .parse(call(HttpRequest.newBuilder(uri("/schemas/ids/" + id)).GET())
                            .get("schema").asText()));
        }

        private URI uri(String path) {
            return URI.create(baseUrl + path);
        }

        private JsonNode call(HttpRequest.Builder request) {
            try {
                HttpResponse<String> response = http.send(
                        request.timeout(Duration.ofSeconds(10))
                                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                                .header("Accept", "application/vnd.schemaregistry.v1+json")
                                .build(),
                        HttpResponse.BodyHandlers.ofString());
                if (response.statusCode() != 200) {
                    throw new SerializationException("schema registry " + response.request().method()
                            + " " + response.uri() + " answered " + response.statusCode() + ": "
                            + response.body());
                }
                return JSON.readTree(response.body());
            } catch (IOException e) {
                throw new SerializationException("schema registry " + baseUrl + ": " + e, e);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new SerializationException("interrupted calling the schema registry", e);
            }
        }
    }

    /** GenericRecord -> Confluent framing, with the id looked up under {@code <topic>-<full name>}. */
    public static final class AvroSerializer implements Serializer<GenericRecord> {
        private final RegistryClient registry;

        public AvroSerializer(RegistryClient registry) {
            this.registry = registry;
        }

        @Override
        public byte[] serialize(String topic, GenericRecord record) {
            if (record == null) {
                return null;
            }
            Schema schema = record.getSchema();
            int id = registry.lookUp(topic + "-" + schema.getFullName(), schema);
            try {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                out.write(MAGIC);
                out.write(ByteBuffer.allocate(4).putInt(id).array());
                BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
                new GenericDatumWriter<GenericRecord>(schema).write(record, encoder);
                encoder.flush();
                return out.toByteArray();
            } catch (IOException e) {
                throw new SerializationException("encoding " + schema.getFullName() + ": " + e, e);
            }
        }
    }

    /** Confluent framing -> GenericRecord, decoded with the writer schema fetched by its id. */
    public static final class AvroDeserializer implements Deserializer<GenericRecord> {
        private final RegistryClient registry;

        public AvroDeserializer(RegistryClient registry) {
            this.registry = registry;
        }

        @Override
        public GenericRecord deserialize(String topic, byte[] data) {
            if (data == null) {
                return null;
            }
            Schema writer = registry.byId(schemaId(data));
            try {
                return new GenericDatumReader<GenericRecord>(writer).read(null,
                        DecoderFactory.get().binaryDecoder(data, 5, data.length - 5, null));
            } catch (IOException e) {
                throw new SerializationException("decoding " + writer.getFullName() + ": " + e, e);
            }
        }
    }
}
