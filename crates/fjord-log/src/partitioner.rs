//! The default partitioner's key hash, bit-for-bit as Kafka's Java client computes it.
//!
//! A keyed record goes to partition `toPositive(murmur2(key)) % numPartitions` in the Java
//! client (`BuiltInPartitioner.partitionForKey`, and `DefaultPartitioner` before it), in
//! KafkaJS's `DefaultPartitioner` (2.x; `JavaCompatiblePartitioner` in 1.x), in librdkafka's
//! `murmur2`/`murmur2_random` partitioners and in kafka-python. Fjord uses the same function so
//! that a key lands on the same partition whichever client wrote it, and so that Kafka Streams
//! style co-partitioning holds between topics written by Fjord and by those clients.
//!
//! The hash is MurmurHash2 (32-bit) with Kafka's seed, computed over the serialized key bytes.

/// Kafka's murmur2 seed (`Utils.murmur2`).
const SEED: u32 = 0x9747_b28c;
/// MurmurHash2 mixing multiplier.
const M: u32 = 0x5bd1_e995;
/// MurmurHash2 mixing shift.
const R: u32 = 24;

/// The 32-bit MurmurHash2 of `data`, exactly as `org.apache.kafka.common.utils.Utils.murmur2`.
///
/// Java's `int` arithmetic wraps and `>>>` is a logical shift, so the computation is done on
/// `u32` with wrapping multiplications and the result reinterpreted as `i32`. The 1 to 3 tail
/// bytes are folded in the order of Java's fall-through `switch`.
pub fn murmur2(data: &[u8]) -> i32 {
    // Java uses the array length (an int) here; a key is never 4 GiB long, and wrapping the
    // length is what a 32-bit implementation such as librdkafka's does anyway.
    let mut h = SEED ^ (data.len() as u32);

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // Java: switch (length % 4) { case 3: ... case 2: ... case 1: ...; h *= m; } with
    // fall-through, so a 3-byte tail folds in all three bytes.
    match *chunks.remainder() {
        [a, b, c] => {
            h ^= u32::from(c) << 16;
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a, b] => {
            h ^= u32::from(b) << 8;
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        [a] => {
            h ^= u32::from(a);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;

    h as i32
}

/// Clears the sign bit, as Kafka's `Utils.toPositive`.
///
/// Not `abs`: `abs(i32::MIN)` would overflow, and Kafka deliberately maps negative hashes with
/// a mask so every client agrees on the result.
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for a record with this key:
/// `toPositive(murmur2(key)) % numPartitions`.
///
/// Only keyed records are placed by hash; records without a key are spread by the client (sticky
/// or round-robin) and never come through here.
///
/// # Panics
///
/// If `num_partitions` is 0, as Java's `%` throws `ArithmeticException`: a topic always has at
/// least one partition.
pub fn partition_for_key(key: &[u8], num_partitions: u32) -> u32 {
    // to_positive leaves a value in 0..=i32::MAX, so the conversion is lossless.
    to_positive(murmur2(key)) as u32 % num_partitions
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// apache/kafka `clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java`,
    /// `testMurmur2`.
    #[test]
    fn kafka_utils_test_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for &(key, expected) in cases {
            assert_eq!(murmur2(key), expected, "key {:?}", String::from_utf8_lossy(key));
        }
    }

    /// confluentinc/librdkafka `src/rdmurmur2.c`, `unittest_murmur2` (its expected values are
    /// "java_murmur2_results"). The suffixes of "1234" and of the long string cover every tail
    /// length (0 to 3 bytes), and the empty key is included.
    #[test]
    fn librdkafka_vectors() {
        let unaligned = "PreAmbleWillBeRemoved,ThePrePartThatIs";
        let cases: &[(&str, u32)] = &[
            ("kafka", 0xd067_cf64),
            ("giberish123456789", 0x8f55_2b0c),
            ("1234", 0x9fc9_7b14),
            ("234", 0xe7c0_09ca),
            ("34", 0x8739_30da),
            ("4", 0x5a4b_5ca1),
            (unaligned, 0x7842_4f1c),
            (&unaligned[1..], 0x4a62_b377),
            (&unaligned[2..], 0xe0e4_e09e),
            (&unaligned[3..], 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        for &(key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected as i32, "key {key:?}");
        }
    }

    /// tulios/kafkajs `src/producer/partitioners/defaultJava/murmur2.spec.js` (KafkaJS's
    /// Java-compatible murmur2, the `DefaultPartitioner` of KafkaJS 2.x), whose values were
    /// generated with the Java client's `Utils.murmur2` (`defaultJava/Test.java`).
    #[test]
    fn kafkajs_java_compatible_vectors() {
        let cases: &[(&str, i32)] = &[
            ("0", 971_027_396),
            ("1", -1_993_445_489),
            ("128", -326_012_175),
            ("2187", -1_508_407_203),
            ("16384", -325_739_742),
            ("78125", -1_654_490_814),
            ("279936", 1_462_227_128),
            ("823543", -2_014_198_330),
            ("2097152", 607_668_903),
            ("4782969", -1_182_699_775),
            ("10000000", -1_830_336_757),
            ("19487171", -1_603_849_305),
            ("35831808", -857_013_643),
            ("62748517", -1_167_431_028),
            ("105413504", -381_294_639),
            ("170859375", -1_658_323_481),
            ("100:48069", 1_009_543_857),
        ];
        for &(key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()), expected, "key {key:?}");
        }
    }

    /// dpkp/kafka-python `test/test_partitioner.py`, `test_murmur2_java_compatibility`: key to
    /// partition for a 1000-partition topic, "compare with output from Kafka's
    /// org.apache.kafka.clients.producer.Partitioner".
    #[test]
    fn kafka_python_java_compatibility_partitions() {
        let cases: &[(&[u8], u32)] = &[
            (b"", 681),
            (b"a", 524),
            (b"ab", 434),
            (b"abc", 107),
            (b"123456789", 566),
            (b"\x00 ", 742),
        ];
        for &(key, expected) in cases {
            assert_eq!(partition_for_key(key, 1000), expected, "key {key:?}");
        }
    }

    /// librdkafka's expected values above are the raw hashes; its older
    /// `unittest_murmurhashneutral2` (same file) listed keys after `toPositive`: kafka
    /// 1348980580, giberish123456789 257239820.
    #[test]
    fn to_positive_masks_the_sign_bit() {
        assert_eq!(to_positive(murmur2(b"kafka")), 1_348_980_580);
        assert_eq!(to_positive(murmur2(b"giberish123456789")), 257_239_820);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(0), 0);
        assert_eq!(to_positive(i32::MAX), i32::MAX);
        assert_eq!(to_positive(-10), 2_147_483_638);
    }

    #[test]
    fn partition_for_key_is_the_masked_hash_modulo_partitions() {
        // "kafka" hashes to 1348980580 after masking.
        assert_eq!(partition_for_key(b"kafka", 1), 0);
        assert_eq!(partition_for_key(b"kafka", 3), 1_348_980_580 % 3);
        assert_eq!(partition_for_key(b"kafka", 7), 1_348_980_580 % 7);
        assert_eq!(partition_for_key(b"kafka", u32::MAX), 1_348_980_580);
    }

    #[test]
    #[should_panic]
    fn zero_partitions_panics() {
        let _ = partition_for_key(b"key", 0);
    }

    proptest! {
        #[test]
        fn partition_is_always_in_range(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            num_partitions in 1u32..=u32::MAX,
        ) {
            let partition = partition_for_key(&key, num_partitions);
            prop_assert!(partition < num_partitions);
            // And it is stable for the same key.
            prop_assert_eq!(partition, partition_for_key(&key, num_partitions));
        }
    }
}
