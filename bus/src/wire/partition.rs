//! Which partition a key goes to: the Java client's default partitioner (murmur2 of the key
//! bytes, made positive, modulo the partition count), which choreo's producers use
//! (librdkafka's `murmur2_random`) and every language's Kafka client can be set to. The saga
//! coordinator uses it to find the partition that owns a correlation id, so that an input that
//! arrived elsewhere (keyed otherwise, or produced with another partitioner) is forwarded there.

/// Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    // Kafka hashes the length as a Java int.
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (at least 1), as the Java client's default
/// partitioner picks it for a keyed record.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn hashes_like_kafkas_utils_murmur2() {
        for (key, want) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()), want, "{key}");
        }
    }

    /// librdkafka's `murmur2_random` partitioner (what choreo's producers use) puts every key
    /// where [`partition_of`] says.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn agrees_with_the_producers_partitioner() {
        use rdkafka::ClientConfig;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{FutureProducer, FutureRecord};
        use rdkafka::util::Timeout;
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("keys", 12, 1).expect("topic");
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("partitioner", "murmur2_random")
            .create()
            .expect("producer");
        for i in 0..200 {
            let key = format!("order-{i}-{}", "x".repeat(i % 7));
            let delivery = producer
                .send(
                    FutureRecord::to("keys").key(&key).payload("v"),
                    Timeout::After(std::time::Duration::from_secs(10)),
                )
                .await
                .expect("delivered");
            assert_eq!(
                delivery.partition,
                partition_of(key.as_bytes(), 12),
                "{key}"
            );
        }
    }
}
