//! Where a key lands: the Java client's default partitioner (murmur2 of the key bytes, made
//! positive, modulo the partition count), which every choreo producer uses
//! (`partitioner = murmur2_random`) and the other languages' clients are set to. A reader that
//! wants one key's records reads only that partition ([`partition_for`]).

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
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
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(b) = rest.first() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (at least 1), as the Java client's default
/// partitioner and librdkafka's `murmur2_random` place a keyed record.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    // Utils.toPositive: the sign bit cleared (not the absolute value).
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // The values of Apache Kafka's own UtilsTest.testMurmur2.
        for (key, want) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_positive_and_in_range() {
        for n in [1, 3, 4, 12] {
            for key in ["o-1", "order-42", "", "é"] {
                let p = partition_for(key.as_bytes(), n);
                assert!((0..n).contains(&p), "{key} → {p} of {n}");
            }
        }
        // toPositive clears the sign bit: -973932308 & 0x7fffffff = 1173551340.
        assert_eq!(partition_for(b"21", 1_000_000_007), 1_173_551_340);
    }
}
