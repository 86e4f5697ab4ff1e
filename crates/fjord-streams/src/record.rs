//! The record that flows through a topology: key, value, timestamp and headers.

use std::sync::Arc;

/// One header: a string key and an optional byte value. Kafka allows repeated keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The key.
    pub key: Arc<str>,
    /// The value.
    pub value: Option<bytes::Bytes>,
}

/// Record headers, in order. Empty headers allocate nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Adds a header at the end.
    pub fn add(
        &mut self,
        key: impl Into<Arc<str>>,
        value: Option<impl Into<bytes::Bytes>>,
    ) -> &mut Self {
        self.0.push(Header { key: key.into(), value: value.map(Into::into) });
        self
    }

    /// Removes every header with this key.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.0.retain(|h| &*h.key != key);
        self
    }

    /// The last value of a key (Kafka's `lastHeader`).
    pub fn last(&self, key: &str) -> Option<&Header> {
        self.0.iter().rev().find(|h| &*h.key == key)
    }

    /// All headers.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads the headers of a fetched record.
    pub fn from_log(headers: fjord_log::record::Headers<'_>) -> Self {
        if headers.is_empty() {
            return Headers::new();
        }
        Headers(
            headers
                .iter()
                .map(|h| Header {
                    key: Arc::from(h.key),
                    value: h.value.map(bytes::Bytes::copy_from_slice),
                })
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A record in a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// The timestamp (ms): the source record's, or what a processor set.
    pub timestamp: i64,
    /// The headers.
    pub headers: Headers,
}

impl<K, V> Record<K, V> {
    /// A record without headers.
    pub fn new(key: K, value: V, timestamp: i64) -> Self {
        Record { key, value, timestamp, headers: Headers::new() }
    }

    /// The same record with another key.
    pub fn with_key<K2>(self, key: K2) -> Record<K2, V> {
        Record { key, value: self.value, timestamp: self.timestamp, headers: self.headers }
    }

    /// The same record with another value.
    pub fn with_value<V2>(self, value: V2) -> Record<K, V2> {
        Record { key: self.key, value, timestamp: self.timestamp, headers: self.headers }
    }

    /// The same record with another timestamp.
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }
}
