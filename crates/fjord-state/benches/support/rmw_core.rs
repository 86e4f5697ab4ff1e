// The measured loops of the `state` benchmark, shared by the criterion bench and the
// `rmw_timing` example (which runs them without criterion).

use fjord_state::{InMemoryStore, KeyValueBytesStore, RocksDbEnv, RocksDbStore, WriteBatch};

const KEYS: u64 = 10_000;

fn increment(store: &dyn KeyValueBytesStore, key: &[u8]) -> Vec<u8> {
    let count = store.get(key).unwrap().map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
    (count + 1).to_be_bytes().to_vec()
}

/// One pass over all keys, one write per record.
fn pass_per_record(store: &dyn KeyValueBytesStore, batch: &mut WriteBatch) {
    for i in 0..KEYS {
        let key = i.to_be_bytes();
        let value = increment(store, &key);
        batch.clear();
        batch.put(key.to_vec(), value);
        store.write(batch, None).unwrap();
    }
}

/// One pass over all keys, writes staged and applied every 1,000 records (keys within a batch
/// are distinct, so reads need not look into the staged batch).
fn pass_batched(store: &dyn KeyValueBytesStore, batch: &mut WriteBatch, offset: &mut i64) {
    batch.clear();
    for i in 0..KEYS {
        let key = i.to_be_bytes();
        let value = increment(store, &key);
        batch.put(key.to_vec(), value);
        if batch.len() == 1000 {
            *offset += 1000;
            store.write(batch, Some(*offset)).unwrap();
            batch.clear();
        }
    }
}

