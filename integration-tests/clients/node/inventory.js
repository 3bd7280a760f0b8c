#!/usr/bin/env node
// choreo's order saga, inventory role, written in Node.js with stock libraries: kafkajs as the
// Kafka client and @kafkajs/confluent-schema-registry as the Confluent-registry Avro
// serializer/deserializer. Nothing here knows about choreo beyond its wire contract:
//   key     = the order id (UTF-8), so every event of one order lands on the same partition
//   value   = Confluent framing: byte 0, 4-byte big-endian schema id, Avro binary body
//   headers = the CloudEvents Kafka binary binding (ce_*), plus ce_correlationid,
//             ce_causationid and W3C traceparent
//
//   inventory.js serve BOOTSTRAP REGISTRY_URL ORDER_ID
//       Reads `orders` until ORDER_ID's OrderPlaced, reserves its items by producing an
//       InventoryReserved on `inventory`, then waits for the saga coordinator's OrderConfirmed
//       and prints one JSON line {received, produced, confirmed}.
//   inventory.js partitions BOOTSTRAP TOPIC KEY...
//       Produces one record per key (value = the key) and prints {"<key>": <partition>, ...}.
//
// stdout carries only that JSON line; kafkajs's logs and errors go to stderr.
'use strict'

const crypto = require('node:crypto')
const fs = require('node:fs')
const path = require('node:path')
const { Kafka, Partitioners, logLevel } = require('kafkajs')
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry')

const ROLE = 'inventory'
const LANG = 'node'
const SOURCE = `/services/${ROLE}-${LANG}`
const ORDER_PLACED = 'io.choreo.orders.OrderPlaced'
const ORDER_CONFIRMED = 'io.choreo.orders.OrderConfirmed'
const INVENTORY_RESERVED = 'io.choreo.orders.InventoryReserved'
// TopicRecordNameStrategy: "<topic>-<Avro full name>".
const RESERVED_TOPIC = 'inventory'
const RESERVED_SUBJECT = `${RESERVED_TOPIC}-${INVENTORY_RESERVED}`
// The repo's schema files, relative to this file: integration-tests/clients/node/ -> schemas/avro/.
const SCHEMAS = path.join(__dirname, '..', '..', '..', 'schemas', 'avro')
const TIMEOUT_MS = 120_000

// kafkajs's default logger writes INFO lines to stdout; keep stdout for the result.
const stderrLogger = () => ({ namespace, label, log }) => {
  const { message, ...rest } = log
  process.stderr.write(`kafkajs ${label} [${namespace}] ${message} ${JSON.stringify(rest)}\n`)
}

function kafkaClient (bootstrap) {
  return new Kafka({
    clientId: `${ROLE}-${LANG}`,
    brokers: bootstrap.split(','),
    logLevel: logLevel.WARN,
    logCreator: stderrLogger
  })
}

function producerFor (kafka) {
  return kafka.producer({
    // Idempotent producer; kafkajs requires acks = -1 (all) on every send with it.
    idempotent: true,
    // kafkajs's DefaultPartitioner (the default since 2.0.0, formerly "JavaCompatiblePartitioner")
    // is the Java client's: toPositive(murmur2(keyBytes)) % numPartitions, with Kafka's murmur2
    // seed 0x9747b28c (see kafkajs/src/producer/partitioners/default/murmur2.js and
    // legacy/partitioner.js). Named explicitly so the choice is visible (and kafkajs does not
    // warn about the v2 partitioner switch).
    createPartitioner: Partitioners.DefaultPartitioner
  })
}

// kafkajs gives header values as Buffers (an array of them when a header repeats).
function textHeaders (headers = {}) {
  const out = {}
  for (const [name, raw] of Object.entries(headers)) {
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw
    if (value !== undefined && value !== null) out[name] = value.toString('utf8')
  }
  return out
}

// The schema id from the Confluent framing (bytes 1..4, big-endian).
const schemaIdOf = (value) => value.readUInt32BE(1)

// W3C trace context: keep the input's trace id, new span id; a new trace if none/invalid.
function childTraceparent (parent) {
  const match = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(parent || '')
  const traceId = match && !/^0+$/.test(match[1]) ? match[1] : crypto.randomBytes(16).toString('hex')
  return `00-${traceId}-${crypto.randomBytes(8).toString('hex')}-01`
}

async function serve (bootstrap, registryUrl, orderId) {
  const kafka = kafkaClient(bootstrap)
  const registry = new SchemaRegistry({ host: registryUrl })

  // The serializer's schema id: look the schema file up under its subject
  // (POST /subjects/<subject>); never register it.
  const avsc = fs.readFileSync(path.join(SCHEMAS, 'inventory_reserved.v1.avsc'), 'utf8')
  const reservedSchemaId = await registry.getRegistryIdBySchema(RESERVED_SUBJECT, {
    type: SchemaType.AVRO,
    schema: avsc
  })

  const producer = producerFor(kafka)
  await producer.connect()
  const consumer = kafka.consumer({
    groupId: `${ROLE}-${LANG}-${crypto.randomUUID()}`, // a fresh group: read the topic from scratch
    readUncommitted: false // read_committed
  })
  await consumer.connect()
  await consumer.subscribe({ topic: 'orders', fromBeginning: true })

  const result = await new Promise((resolve, reject) => {
    let received = null
    let produced = null
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        try {
          if (!message.key || message.key.toString('utf8') !== orderId || !message.value) return
          const headers = textHeaders(message.headers)

          if (!received && headers.ce_type === ORDER_PLACED) {
            // The stock deserializer: fetches the writer schema by the framed id
            // (GET /schemas/ids/<id>) and decodes the Avro body.
            const value = await registry.decode(message.value)
            received = { value, headers, schema_id: schemaIdOf(message.value) }

            const reserved = {
              order_id: orderId,
              reservation_id: `res-${LANG}-${orderId}`,
              items: value.items.map(({ sku, quantity }) => ({ sku, quantity }))
            }
            const ceId = crypto.randomUUID()
            const outHeaders = {
              ce_specversion: '1.0',
              ce_id: ceId,
              ce_source: SOURCE,
              ce_type: INVENTORY_RESERVED,
              ce_time: new Date().toISOString(),
              ce_subject: orderId,
              ce_correlationid: orderId,
              'content-type': 'application/avro',
              traceparent: childTraceparent(headers.traceparent)
            }
            if (headers.ce_id) outHeaders.ce_causationid = headers.ce_id
            const [meta] = await producer.send({
              topic: RESERVED_TOPIC,
              acks: -1,
              messages: [{
                key: orderId,
                // The stock serializer: Confluent framing with the looked-up id.
                value: await registry.encode(reservedSchemaId, reserved),
                headers: outHeaders
              }]
            })
            produced = {
              topic: meta.topicName,
              partition: meta.partition,
              offset: Number(meta.baseOffset),
              ce_id: ceId
            }
            process.stderr.write(`reserved ${orderId}: ${JSON.stringify(produced)}\n`)
          } else if (received && headers.ce_type === ORDER_CONFIRMED) {
            const value = await registry.decode(message.value)
            resolve({
              received,
              produced,
              confirmed: { value, headers, schema_id: schemaIdOf(message.value), partition }
            })
          }
        } catch (err) {
          reject(err)
        }
      }
    }).catch(reject)
  })

  await closeAll([consumer, producer])
  return result
}

async function partitions (bootstrap, topic, keys) {
  const producer = producerFor(kafkaClient(bootstrap))
  await producer.connect()
  const out = {}
  for (const key of keys) {
    const [meta] = await producer.send({
      topic,
      acks: -1,
      messages: [{ key, value: Buffer.from(key, 'utf8') }]
    })
    out[key] = meta.partition
  }
  await closeAll([producer])
  return out
}

// Disconnect (leaving the consumer group), but never let a slow goodbye hold the result.
async function closeAll (clients) {
  const bye = Promise.allSettled(clients.map((c) => c.disconnect()))
  await Promise.race([bye, new Promise((resolve) => setTimeout(resolve, 5000).unref())])
}

function usage () {
  process.stderr.write(
    'usage: inventory.js serve BOOTSTRAP REGISTRY_URL ORDER_ID\n' +
    '       inventory.js partitions BOOTSTRAP TOPIC KEY...\n')
  process.exit(2)
}

async function main (argv) {
  const [command, ...args] = argv
  let run
  if (command === 'serve' && args.length === 3) run = () => serve(...args)
  else if (command === 'partitions' && args.length >= 3) run = () => partitions(args[0], args[1], args.slice(2))
  else usage()

  const timer = setTimeout(() => {
    process.stderr.write(`inventory.js ${command}: not done within ${TIMEOUT_MS / 1000} s\n`)
    process.exit(1)
  }, TIMEOUT_MS)
  try {
    const result = await run()
    clearTimeout(timer)
    process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0))
  } catch (err) {
    process.stderr.write(`inventory.js ${command} failed: ${err && err.stack ? err.stack : err}\n`)
    process.exit(1)
  }
}

main(process.argv.slice(2))
