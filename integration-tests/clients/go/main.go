// Command choreo-payment-go plays choreo's PAYMENT service in Go with plain, stock libraries:
// franz-go (github.com/twmb/franz-go) for Kafka, its pkg/sr for the schema registry client and the
// Confluent framing (sr.Serde), and github.com/hamba/avro/v2 for Avro. It shows choreo's wire
// contract from a Go service's side:
//
//   - key = the order id (the saga's correlation id), partitioned with Kafka's murmur2 partitioner
//     (the Java client's default) so keys land on the same partitions as choreo's own producers;
//   - value = Confluent framing (0x00, 4-byte big-endian schema id, Avro binary body), the id
//     LOOKED UP (not registered) under the subject "<topic>-<avro full name>";
//   - headers = CloudEvents Kafka binary binding (ce_*), plus ce_correlationid, ce_causationid and
//     a W3C traceparent continuing the input's trace.
//
// Usage:
//
//	choreo-payment-go serve BOOTSTRAP REGISTRY_URL ORDER_ID
//	    reads OrderPlaced(ORDER_ID) from "orders", answers PaymentAuthorized on "payments", waits
//	    for the coordinator's OrderConfirmed(ORDER_ID) on "orders" and prints one JSON line.
//	choreo-payment-go partitions BOOTSTRAP TOPIC KEY...
//	    produces one record per key (value = key) and prints {"<key>": <partition>, ...}.
//
// The .avsc files are read from the repository's schemas/avro folder, found relative to this
// source file (override with CHOREO_SCHEMA_DIR).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sr"
)

const (
	role           = "payment"
	inputTopic     = "orders"
	outputTopic    = "payments"
	orderPlaced    = "io.choreo.orders.OrderPlaced"
	orderConfirmed = "io.choreo.orders.OrderConfirmed"
	paymentAuth    = "io.choreo.orders.PaymentAuthorized"
	timeout        = 120 * time.Second
)

// Money and PaymentAuthorized mirror schemas/avro/payment_authorized.v1.avsc.
type Money struct {
	AmountMinor int64  `avro:"amount_minor" json:"amount_minor"`
	Currency    string `avro:"currency" json:"currency"`
}

type PaymentAuthorized struct {
	OrderID   string `avro:"order_id"`
	PaymentID string `avro:"payment_id"`
	Amount    Money  `avro:"amount"`
}

func main() {
	args := os.Args[1:]
	var err error
	switch {
	case len(args) == 4 && args[0] == "serve":
		err = serve(args[1], args[2], args[3])
	case len(args) >= 4 && args[0] == "partitions":
		err = partitions(args[1], args[2], args[3:])
	default:
		err = errors.New("usage: serve BOOTSTRAP REGISTRY_URL ORDER_ID | partitions BOOTSTRAP TOPIC KEY...")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "choreo-payment-go:", err)
		os.Exit(1)
	}
}

// producerOpts: acks=all, idempotent (franz-go's default; it requires acks=all) and, set
// explicitly, Kafka's murmur2 key partitioner: StickyKeyPartitioner(nil) hashes keys with murmur2,
// masks the sign bit and takes the modulo, exactly like the Java client.
func producerOpts(bootstrap string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	}
}

func serve(bootstrap, registryURL, orderID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	registry, err := sr.NewClient(sr.URLs(registryURL))
	if err != nil {
		return err
	}
	var serde sr.Serde // Confluent framing; the default header is sr.ConfluentHeader

	// Encoding: look the schema file's content up under its subject (no auto-registering).
	avsc, err := os.ReadFile(filepath.Join(schemaDir(), "payment_authorized.v1.avsc"))
	if err != nil {
		return err
	}
	subject := outputTopic + "-" + paymentAuth // TopicRecordNameStrategy
	found, err := registry.LookupSchema(ctx, subject, sr.Schema{Schema: string(avsc)})
	if err != nil {
		return fmt.Errorf("look up %s: %w", subject, err)
	}
	paymentSchema, err := avro.ParseBytesWithCache(avsc, "", &avro.SchemaCache{})
	if err != nil {
		return err
	}
	serde.Register(found.ID, PaymentAuthorized{}, sr.EncodeFn(func(v any) ([]byte, error) {
		return avro.Marshal(paymentSchema, v)
	}))

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(fmt.Sprintf("%s-go-%s", role, randomHex(4))),
		kgo.ConsumeTopics(inputTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if err != nil {
		return err
	}
	defer consumer.Close()
	producer, err := kgo.NewClient(producerOpts(bootstrap)...)
	if err != nil {
		return err
	}
	defer producer.Close()

	// 1. The order to pay for.
	placed, err := await(ctx, consumer, orderID, orderPlaced)
	if err != nil {
		return err
	}
	received, err := decode(ctx, registry, &serde, placed)
	if err != nil {
		return err
	}
	total, _ := received["value"].(map[string]any)["total"].(map[string]any)
	amount, ok1 := total["amount_minor"].(int64) // Avro long
	currency, ok2 := total["currency"].(string)
	if !ok1 || !ok2 {
		return fmt.Errorf("OrderPlaced without a total: %v", received["value"])
	}

	// 2. Authorize it: PaymentAuthorized on "payments".
	event := PaymentAuthorized{
		OrderID:   orderID,
		PaymentID: "pay-go-" + orderID,
		Amount:    Money{AmountMinor: amount, Currency: currency},
	}
	value, err := serde.Encode(event)
	if err != nil {
		return err
	}
	ceID := uuid.NewString()
	record := &kgo.Record{
		Topic:   outputTopic,
		Key:     []byte(orderID),
		Value:   value,
		Headers: cloudEventHeaders(ceID, paymentAuth, orderID, placed),
	}
	if err := producer.ProduceSync(ctx, record).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	produced := map[string]any{
		"topic": record.Topic, "partition": record.Partition, "offset": record.Offset, "ce_id": ceID,
	}

	// 3. The coordinator confirms the order once payment, inventory and shipping succeeded.
	confirmedRecord, err := await(ctx, consumer, orderID, orderConfirmed)
	if err != nil {
		return err
	}
	confirmed, err := decode(ctx, registry, &serde, confirmedRecord)
	if err != nil {
		return err
	}
	confirmed["partition"] = confirmedRecord.Partition

	out, err := json.Marshal(map[string]any{"received": received, "produced": produced, "confirmed": confirmed})
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

// await polls until a record with key orderID and header ce_type == ceType arrives.
func await(ctx context.Context, cl *kgo.Client, orderID, ceType string) (*kgo.Record, error) {
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no %s for order %q within %s", ceType, orderID, timeout)
		}
		// The client retries what it can; what it reports here is informational.
		fetches.EachError(func(topic string, partition int32, err error) {
			fmt.Fprintf(os.Stderr, "choreo-payment-go: fetch %s[%d]: %v\n", topic, partition, err)
		})
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			if string(r.Key) == orderID && header(r, "ce_type") == ceType {
				return r, nil
			}
		}
	}
}

// decode turns a record into {"value": ..., "headers": ..., "schema_id": n}. The writer schema is
// fetched from the registry by the id in the framing (GET /schemas/ids/<id>) the first time it is
// seen, then registered in the Serde.
func decode(ctx context.Context, registry *sr.Client, serde *sr.Serde, r *kgo.Record) (map[string]any, error) {
	id, _, err := serde.DecodeID(r.Value)
	if err != nil {
		return nil, err
	}
	if !serde.IsRegistered(id, sr.DecodeFn) {
		s, err := registry.SchemaByID(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("schema %d: %w", id, err)
		}
		schema, err := avro.ParseWithCache(s.Schema, "", &avro.SchemaCache{})
		if err != nil {
			return nil, err
		}
		serde.Register(id, map[string]any{}, sr.DecodeFn(func(b []byte, v any) error {
			return avro.Unmarshal(schema, b, v)
		}))
	}
	var value map[string]any
	if err := serde.Decode(r.Value, &value); err != nil {
		return nil, err
	}
	headers := map[string]string{}
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
	}
	return map[string]any{"value": value, "headers": headers, "schema_id": id}, nil
}

// cloudEventHeaders: the CloudEvents Kafka binary binding plus choreo's correlation/causation ids
// and a traceparent that continues the input's trace with a new span.
func cloudEventHeaders(ceID, ceType, orderID string, cause *kgo.Record) []kgo.RecordHeader {
	traceID := randomHex(16)
	if parts := strings.Split(header(cause, "traceparent"), "-"); len(parts) == 4 && len(parts[1]) == 32 {
		traceID = parts[1]
	}
	h := func(k, v string) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: []byte(v)} }
	return []kgo.RecordHeader{
		h("ce_specversion", "1.0"),
		h("ce_id", ceID),
		h("ce_source", "/services/"+role+"-go"),
		h("ce_type", ceType),
		h("ce_time", time.Now().UTC().Format(time.RFC3339Nano)),
		h("ce_subject", orderID),
		h("ce_correlationid", orderID),
		h("ce_causationid", header(cause, "ce_id")),
		h("content-type", "application/avro"),
		h("traceparent", "00-"+traceID+"-"+randomHex(8)+"-01"),
	}
}

// partitions produces one record per key (value = the key) with serve's producer settings and
// prints the partition each landed on, in the order given.
func partitions(bootstrap, topic string, keys []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	producer, err := kgo.NewClient(producerOpts(bootstrap)...)
	if err != nil {
		return err
	}
	defer producer.Close()
	records := make([]*kgo.Record, len(keys))
	for i, k := range keys {
		records[i] = &kgo.Record{Topic: topic, Key: []byte(k), Value: []byte(k)}
	}
	if err := producer.ProduceSync(ctx, records...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	var out bytes.Buffer // hand-built to keep the keys in order
	out.WriteByte('{')
	for i, r := range records {
		if i > 0 {
			out.WriteString(", ")
		}
		k, _ := json.Marshal(string(r.Key))
		fmt.Fprintf(&out, "%s: %d", k, r.Partition)
	}
	out.WriteByte('}')
	fmt.Println(out.String())
	return nil
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// schemaDir is <repo>/schemas/avro, located from this source file's path (recorded at build time).
func schemaDir() string {
	if dir := os.Getenv("CHOREO_SCHEMA_DIR"); dir != "" {
		return dir
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "schemas", "avro")
}
