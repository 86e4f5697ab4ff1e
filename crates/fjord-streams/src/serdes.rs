//! Serdes: how keys and values become bytes and back.
//!
//! A [`Serde`] writes into a caller's buffer (the runtime reuses one per sink, so serializing
//! allocates nothing) and reads from a borrowed slice of the fetched batch. Kafka's `null` is
//! not a value of most Rust types: a null key or value deserializes with
//! [`Serde::deserialize_null`], which fails for plain types and gives `None` for `Option<T>`
//! (see [`Serdes::option`]).
//!
//! Built in (all through [`Serdes`]): JSON for serde types (serde_json), UTF-8 strings, raw
//! bytes, big-endian integers and floats exactly as Kafka's Java serdes write them, unit, and
//! a compact binary encoding for serde types (postcard).

use std::marker::PhantomData;
use std::sync::Arc;

/// Why a key or value could not be (de)serialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerdeError {
    /// The bytes are not what the serde reads.
    #[error("{serde}: cannot deserialize {len} bytes: {reason}")]
    Deserialize {
        /// The serde.
        serde: &'static str,
        /// Length of the input.
        len: usize,
        /// What went wrong.
        reason: String,
    },
    /// The value cannot be written.
    #[error("{serde}: cannot serialize: {reason}")]
    Serialize {
        /// The serde.
        serde: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A null key or value for a type that has no null; use `Serdes::option` for nullable data.
    #[error(
        "{serde}: got null, but the type has no null value: use Serdes::option(..) for nullable keys or values"
    )]
    Null {
        /// The serde.
        serde: &'static str,
    },
}

/// Converts values of `T` to bytes and back.
pub trait Serde<T>: Send + Sync + 'static {
    /// A short name for errors and topology descriptions (`json`, `string`, ...).
    fn name(&self) -> &'static str;

    /// Appends the bytes of `value` to `out`.
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError>;

    /// Whether `value` is written as null (no bytes at all, Kafka's null); only `Option`'s
    /// `None` is.
    fn is_null(&self, value: &T) -> bool {
        let _ = value;
        false
    }

    /// Reads a value from its bytes.
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError>;

    /// Reads a null key or value.
    fn deserialize_null(&self) -> Result<T, SerdeError> {
        Err(SerdeError::Null { serde: self.name() })
    }
}

/// A shared serde for `T`.
pub type SerdeRef<T> = Arc<dyn Serde<T>>;

/// Reads an optional byte slice (a record key or value) with a serde.
pub fn deserialize_opt<T: 'static>(
    serde: &dyn Serde<T>,
    bytes: Option<&[u8]>,
) -> Result<T, SerdeError> {
    match bytes {
        Some(bytes) => serde.deserialize(bytes),
        None => serde.deserialize_null(),
    }
}

/// The built-in serdes.
#[derive(Debug, Clone, Copy)]
pub struct Serdes;

impl Serdes {
    /// JSON via serde_json: the usual choice for structured values.
    pub fn json<T: serde::Serialize + serde::de::DeserializeOwned + 'static>() -> SerdeRef<T> {
        Arc::new(JsonSerde(PhantomData))
    }

    /// A compact binary encoding of serde types (postcard): smaller and faster than JSON, but
    /// not self-describing and only readable by the same types.
    pub fn binary<T: serde::Serialize + serde::de::DeserializeOwned + 'static>() -> SerdeRef<T> {
        Arc::new(BinarySerde(PhantomData))
    }

    /// UTF-8 strings (Kafka's `StringSerde`).
    pub fn string() -> SerdeRef<String> {
        Arc::new(StringSerde)
    }

    /// Raw bytes (Kafka's `ByteArraySerde`).
    pub fn bytes() -> SerdeRef<Vec<u8>> {
        Arc::new(BytesSerde)
    }

    /// Shared bytes without a copy on the way in beyond the one into the value.
    pub fn shared_bytes() -> SerdeRef<bytes::Bytes> {
        Arc::new(SharedBytesSerde)
    }

    /// Big-endian `i32` (Kafka's `IntegerSerde`).
    pub fn i32() -> SerdeRef<i32> {
        Arc::new(IntSerde::<i32>(PhantomData))
    }

    /// Big-endian `i64` (Kafka's `LongSerde`).
    pub fn i64() -> SerdeRef<i64> {
        Arc::new(IntSerde::<i64>(PhantomData))
    }

    /// Big-endian `u32`.
    pub fn u32() -> SerdeRef<u32> {
        Arc::new(IntSerde::<u32>(PhantomData))
    }

    /// Big-endian `u64`.
    pub fn u64() -> SerdeRef<u64> {
        Arc::new(IntSerde::<u64>(PhantomData))
    }

    /// IEEE 754 big-endian `f64` (Kafka's `DoubleSerde`).
    pub fn f64() -> SerdeRef<f64> {
        Arc::new(IntSerde::<f64>(PhantomData))
    }

    /// Nothing: for keys that do not matter (Kafka's `VoidSerde`); always null on the wire.
    pub fn unit() -> SerdeRef<()> {
        Arc::new(UnitSerde)
    }

    /// Nullable values of another serde: Kafka's null is `None`.
    pub fn option<T: 'static>(inner: SerdeRef<T>) -> SerdeRef<Option<T>> {
        Arc::new(OptionSerde(inner))
    }
}

struct JsonSerde<T>(PhantomData<fn() -> T>);

impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Serde<T> for JsonSerde<T> {
    fn name(&self) -> &'static str {
        "json"
    }
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        serde_json::to_writer(out, value)
            .map_err(|e| SerdeError::Serialize { serde: "json", reason: e.to_string() })
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        serde_json::from_slice(bytes).map_err(|e| SerdeError::Deserialize {
            serde: "json",
            len: bytes.len(),
            reason: e.to_string(),
        })
    }
}

struct BinarySerde<T>(PhantomData<fn() -> T>);

impl<T: serde::Serialize + serde::de::DeserializeOwned + 'static> Serde<T> for BinarySerde<T> {
    fn name(&self) -> &'static str {
        "binary"
    }
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        let taken = std::mem::take(out);
        match postcard::to_extend(value, taken) {
            Ok(filled) => {
                *out = filled;
                Ok(())
            }
            Err(e) => Err(SerdeError::Serialize { serde: "binary", reason: e.to_string() }),
        }
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        postcard::from_bytes(bytes).map_err(|e| SerdeError::Deserialize {
            serde: "binary",
            len: bytes.len(),
            reason: e.to_string(),
        })
    }
}

struct StringSerde;

impl Serde<String> for StringSerde {
    fn name(&self) -> &'static str {
        "string"
    }
    fn serialize(&self, value: &String, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<String, SerdeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| SerdeError::Deserialize {
            serde: "string",
            len: bytes.len(),
            reason: e.to_string(),
        })
    }
}

struct BytesSerde;

impl Serde<Vec<u8>> for BytesSerde {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn serialize(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Vec<u8>, SerdeError> {
        Ok(bytes.to_vec())
    }
}

struct SharedBytesSerde;

impl Serde<bytes::Bytes> for SharedBytesSerde {
    fn name(&self) -> &'static str {
        "bytes"
    }
    fn serialize(&self, value: &bytes::Bytes, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        out.extend_from_slice(value);
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<bytes::Bytes, SerdeError> {
        Ok(bytes::Bytes::copy_from_slice(bytes))
    }
}

/// Fixed-width big-endian numbers.
trait FixedWidth: Sized + Send + Sync + 'static {
    const NAME: &'static str;
    const WIDTH: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! fixed_width {
    ($t:ty, $name:literal) => {
        impl FixedWidth for $t {
            const NAME: &'static str = $name;
            const WIDTH: usize = std::mem::size_of::<$t>();
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut buf = [0u8; std::mem::size_of::<$t>()];
                buf.copy_from_slice(bytes);
                <$t>::from_be_bytes(buf)
            }
        }
    };
}

fixed_width!(i32, "i32");
fixed_width!(i64, "i64");
fixed_width!(u32, "u32");
fixed_width!(u64, "u64");
fixed_width!(f64, "f64");

struct IntSerde<T>(PhantomData<fn() -> T>);

impl<T: FixedWidth> Serde<T> for IntSerde<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn serialize(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        value.put(out);
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerdeError> {
        if bytes.len() != T::WIDTH {
            return Err(SerdeError::Deserialize {
                serde: T::NAME,
                len: bytes.len(),
                reason: format!("expected exactly {} bytes", T::WIDTH),
            });
        }
        Ok(T::get(bytes))
    }
}

struct UnitSerde;

impl Serde<()> for UnitSerde {
    fn name(&self) -> &'static str {
        "unit"
    }
    fn serialize(&self, _: &(), _: &mut Vec<u8>) -> Result<(), SerdeError> {
        Ok(())
    }
    fn is_null(&self, _: &()) -> bool {
        true
    }
    fn deserialize(&self, _: &[u8]) -> Result<(), SerdeError> {
        Ok(())
    }
    fn deserialize_null(&self) -> Result<(), SerdeError> {
        Ok(())
    }
}

struct OptionSerde<T>(SerdeRef<T>);

impl<T: 'static> Serde<Option<T>> for OptionSerde<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn serialize(&self, value: &Option<T>, out: &mut Vec<u8>) -> Result<(), SerdeError> {
        match value {
            Some(v) => self.0.serialize(v, out),
            None => Ok(()),
        }
    }
    fn is_null(&self, value: &Option<T>) -> bool {
        value.is_none()
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<Option<T>, SerdeError> {
        self.0.deserialize(bytes).map(Some)
    }
    fn deserialize_null(&self) -> Result<Option<T>, SerdeError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T: PartialEq + std::fmt::Debug + 'static>(serde: &SerdeRef<T>, value: T) {
        let mut out = Vec::new();
        serde.serialize(&value, &mut out).unwrap();
        assert_eq!(serde.deserialize(&out).unwrap(), value);
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u64,
        customer: String,
        amount: f64,
        tags: Vec<String>,
    }

    proptest! {
        #[test]
        fn every_serde_round_trips(s in ".*", b in prop::collection::vec(any::<u8>(), 0..64), i in any::<i64>(), f in any::<f64>().prop_filter("nan", |f| !f.is_nan())) {
            round_trip(&Serdes::string(), s.clone());
            round_trip(&Serdes::bytes(), b.clone());
            round_trip(&Serdes::i64(), i);
            round_trip(&Serdes::i32(), i as i32);
            round_trip(&Serdes::u64(), i as u64);
            round_trip(&Serdes::f64(), f);
            let order = Order { id: i as u64, customer: s.clone(), amount: f, tags: vec![s.clone()] };
            round_trip(&Serdes::json::<Order>(), Order { ..order });
            let order = Order { id: i as u64, customer: s, amount: f, tags: vec![] };
            round_trip(&Serdes::binary::<Order>(), order);
        }
    }

    #[test]
    fn integers_match_kafka_java_serdes() {
        let mut out = Vec::new();
        Serdes::i32().serialize(&258, &mut out).unwrap();
        assert_eq!(out, [0, 0, 1, 2]);
        assert!(Serdes::i64().deserialize(&[1, 2, 3]).is_err());
    }

    #[test]
    fn nulls_are_errors_for_plain_types_and_none_for_options() {
        assert!(matches!(deserialize_opt(&*Serdes::string(), None), Err(SerdeError::Null { .. })));
        assert_eq!(deserialize_opt(&*Serdes::option(Serdes::string()), None).unwrap(), None);
        let nullable = Serdes::option(Serdes::i32());
        assert!(nullable.is_null(&None));
        assert_eq!(deserialize_opt(&*nullable, Some(&[0, 0, 0, 7])).unwrap(), Some(7));
    }

    #[test]
    fn bad_bytes_give_errors_that_name_the_serde() {
        let err = Serdes::json::<Order>().deserialize(b"{not json").unwrap_err();
        assert!(err.to_string().starts_with("json:"), "{err}");
        assert!(Serdes::string().deserialize(&[0xff, 0xfe]).is_err());
    }
}
