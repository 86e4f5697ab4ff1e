//! Window and session layouts against naive models, over the in-memory and RocksDB stores:
//! random puts, deletes, expiries and reads, with negative timestamps; after every expiry the
//! underlying store must hold no segment older than the first live one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use fjord_state::window::default_segment_interval;
use fjord_state::{
    InMemoryStore, KeyValueBytesStore, RocksDbEnv, RocksDbStore, SessionStore, WindowStore,
    WriteBatch,
};
use proptest::prelude::*;

const RETENTION: i64 = 100_000;
const INTERVAL: i64 = 30_000;

fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xff)], 0..3)
}

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => -400_000i64..400_000,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(-1i64),
        1 => Just(0i64),
    ]
}

fn live_from(observed: i64) -> i64 {
    if observed == i64::MIN {
        i64::MIN
    } else {
        observed.saturating_sub(RETENTION).saturating_add(1)
    }
}

/// The segment ids present in the underlying store (the first 8 bytes, sign bit flipped).
fn raw_segments(inner: &dyn KeyValueBytesStore) -> Vec<i64> {
    inner
        .range(Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .map(|r| {
            let k = r.unwrap().0;
            (u64::from_be_bytes(k[..8].try_into().unwrap()) ^ (1 << 63)) as i64
        })
        .collect()
}

#[derive(Debug, Clone)]
enum WStep {
    Put(Vec<u8>, i64, Option<u8>),
    Expire(i64),
    Fetch(Vec<u8>, i64, i64),
    FetchAll(i64, i64),
    Get(Vec<u8>, i64),
}

fn wstep() -> impl Strategy<Value = WStep> {
    prop_oneof![
        6 => (key(), time(), proptest::option::weighted(0.85, any::<u8>())).prop_map(|(k, t, v)| WStep::Put(k, t, v)),
        1 => time().prop_map(WStep::Expire),
        3 => (key(), time(), time()).prop_map(|(k, a, b)| WStep::Fetch(k, a, b)),
        1 => (time(), time()).prop_map(|(a, b)| WStep::FetchAll(a, b)),
        2 => (key(), time()).prop_map(|(k, t)| WStep::Get(k, t)),
    ]
}

fn run_window(steps: &[WStep], inner: Arc<dyn KeyValueBytesStore>) {
    let store = WindowStore::new(inner.clone(), RETENTION, INTERVAL);
    let mut model: BTreeMap<(Vec<u8>, i64), Vec<u8>> = BTreeMap::new();
    let mut observed = i64::MIN;
    for (n, step) in steps.iter().enumerate() {
        match step {
            WStep::Put(k, t, v) => {
                let mut batch = WriteBatch::new();
                let value = v.map(|v| vec![v; 3]);
                let staged = store.put(&mut batch, k, *t, value.as_deref()).unwrap();
                observed = observed.max(*t);
                let live = *t >= live_from(observed);
                assert_eq!(staged, live);
                if live {
                    match value {
                        Some(v) => model.insert((k.clone(), *t), v),
                        None => model.remove(&(k.clone(), *t)),
                    };
                }
                inner.write(&batch, Some(n as i64)).unwrap();
            }
            WStep::Expire(t) => {
                let mut batch = WriteBatch::new();
                store.expire(&mut batch, *t).unwrap();
                inner.write(&batch, Some(n as i64)).unwrap();
                observed = observed.max(*t);
                let first_live = live_from(observed).div_euclid(INTERVAL);
                if let Some(min) = raw_segments(&*inner).first() {
                    assert!(
                        *min >= first_live,
                        "segment {min} survived expiry (first live {first_live})"
                    );
                }
            }
            WStep::Fetch(k, a, b) => {
                let lf = live_from(observed);
                let want: Vec<(i64, Vec<u8>)> = model
                    .iter()
                    .filter(|((mk, t), _)| mk == k && *t >= *a && *t <= *b && *t >= lf)
                    .map(|((_, t), v)| (*t, v.clone()))
                    .collect();
                assert_eq!(store.fetch(k, *a, *b).unwrap(), want);
            }
            WStep::FetchAll(a, b) => {
                let lf = live_from(observed);
                let mut want: Vec<(Vec<u8>, i64, Vec<u8>)> = model
                    .iter()
                    .filter(|((_, t), _)| *t >= *a && *t <= *b && *t >= lf)
                    .map(|((k, t), v)| (k.clone(), *t, v.clone()))
                    .collect();
                let mut got = store.fetch_all(*a, *b).unwrap();
                // Documented order: segment, then key, then start.
                let seg_order: Vec<_> = got
                    .iter()
                    .map(|(k, t, _)| (t.div_euclid(INTERVAL), k.len(), k.clone(), *t))
                    .collect();
                assert!(seg_order.windows(2).all(|w| w[0] < w[1]));
                want.sort();
                got.sort();
                assert_eq!(got, want);
            }
            WStep::Get(k, t) => {
                let want = if *t >= live_from(observed) {
                    model.get(&(k.clone(), *t)).cloned()
                } else {
                    None
                };
                assert_eq!(store.get(k, *t).unwrap(), want);
            }
        }
        assert_eq!(store.observed_stream_time(), observed);
    }
    let mut all = store.all().unwrap();
    all.sort();
    let lf = live_from(observed);
    let want: Vec<_> = model
        .iter()
        .filter(|((_, t), _)| *t >= lf)
        .map(|((k, t), v)| (k.clone(), *t, v.clone()))
        .collect();
    assert_eq!(all, want);
    for (stored, _) in inner.range(Bound::Unbounded, Bound::Unbounded).unwrap().map(|r| r.unwrap())
    {
        let (k, t) = store.decode_key(&stored).unwrap();
        assert_eq!(store.encode_key(&k, t), stored);
    }
}

#[derive(Debug, Clone)]
enum DStep {
    Put(Vec<u8>, i64, u8),
    Expire(i64),
    Fetch(Vec<u8>, i64, i64),
    /// A new store object over the same data (a task that restarts).
    Reopen,
}

fn dstep() -> impl Strategy<Value = DStep> {
    // Few keys and timestamps, so that duplicates of a (key, start) are common.
    let t = prop_oneof![4 => (0i64..4).prop_map(|i| i * 50_000), 1 => time()];
    prop_oneof![
        6 => (key(), t.clone(), any::<u8>()).prop_map(|(k, t, v)| DStep::Put(k, t, v)),
        1 => time().prop_map(DStep::Expire),
        3 => (key(), t.clone(), t).prop_map(|(k, a, b)| DStep::Fetch(k, a, b)),
        1 => Just(DStep::Reopen),
    ]
}

/// A store with duplicates against a list of every put: nothing is overwritten, not even by a
/// reopened store, and `fetch` returns a (key, start)'s values in put order.
fn run_duplicates(steps: &[DStep], inner: Arc<dyn KeyValueBytesStore>) {
    let open = || WindowStore::with_duplicates(inner.clone(), RETENTION, INTERVAL);
    let mut store = open();
    let mut model: Vec<(Vec<u8>, i64, Vec<u8>)> = Vec::new();
    let mut observed = i64::MIN;
    for (n, step) in steps.iter().enumerate() {
        match step {
            DStep::Put(k, t, v) => {
                let mut batch = WriteBatch::new();
                let value = vec![*v; 2];
                let staged = store.put(&mut batch, k, *t, Some(&value)).unwrap();
                observed = observed.max(*t);
                assert_eq!(staged, *t >= live_from(observed));
                if staged {
                    model.push((k.clone(), *t, value));
                }
                // A delete cannot single out one of the duplicates: it is ignored.
                assert!(!store.put(&mut batch, k, *t, None).unwrap());
                inner.write(&batch, Some(n as i64)).unwrap();
            }
            DStep::Expire(t) => {
                let mut batch = WriteBatch::new();
                store.expire(&mut batch, *t).unwrap();
                inner.write(&batch, Some(n as i64)).unwrap();
                observed = observed.max(*t);
            }
            DStep::Fetch(k, a, b) => {
                let lf = live_from(observed);
                let mut want: Vec<(i64, Vec<u8>)> = model
                    .iter()
                    .filter(|(mk, t, _)| mk == k && *t >= *a && *t <= *b && *t >= lf)
                    .map(|(_, t, v)| (*t, v.clone()))
                    .collect();
                // Stable: put order within a start.
                want.sort_by_key(|(t, _)| *t);
                assert_eq!(store.fetch(k, *a, *b).unwrap(), want);
            }
            DStep::Reopen => {
                store = open();
                observed = i64::MIN;
                // The expired entries a range delete has not removed yet come back into view.
                model.retain(|(k, t, _)| !store.fetch(k, *t, *t).unwrap().is_empty());
            }
        }
    }
    for (stored, _) in inner.range(Bound::Unbounded, Bound::Unbounded).unwrap().map(|r| r.unwrap())
    {
        let (k, t) = store.decode_key(&stored).unwrap();
        assert!(stored.starts_with(&store.encode_key(&k, t)));
        assert_eq!(stored.len(), store.encode_key(&k, t).len() + 4);
        assert_eq!(store.decode_start(&stored).unwrap(), t);
    }
}

#[derive(Debug, Clone)]
enum SStep {
    Put(Vec<u8>, i64, i64, Option<u8>),
    Expire(i64),
    Find(Vec<u8>, i64, i64),
    Fetch(Vec<u8>),
}

fn sstep() -> impl Strategy<Value = SStep> {
    prop_oneof![
        6 => (key(), time(), 0i64..50_000, proptest::option::weighted(0.85, any::<u8>()))
            .prop_map(|(k, s, len, v)| SStep::Put(k, s, s.saturating_add(len), v)),
        1 => time().prop_map(SStep::Expire),
        3 => (key(), time(), time()).prop_map(|(k, a, b)| SStep::Find(k, a, b)),
        1 => key().prop_map(SStep::Fetch),
    ]
}

fn run_session(steps: &[SStep], inner: Arc<dyn KeyValueBytesStore>) {
    let store = SessionStore::new(inner.clone(), RETENTION, INTERVAL);
    // (key, end, start) -> value
    let mut model: BTreeMap<(Vec<u8>, i64, i64), Vec<u8>> = BTreeMap::new();
    let mut observed = i64::MIN;
    let find = |model: &BTreeMap<(Vec<u8>, i64, i64), Vec<u8>>,
                observed: i64,
                k: &[u8],
                e: i64,
                l: i64| {
        let lf = live_from(observed);
        model
            .iter()
            .filter(|((mk, end, start), _)| mk == k && *end >= e && *end >= lf && *start <= l)
            .map(|((_, end, start), v)| (*start, *end, v.clone()))
            .collect::<Vec<_>>()
    };
    for (n, step) in steps.iter().enumerate() {
        match step {
            SStep::Put(k, s, e, v) => {
                let mut batch = WriteBatch::new();
                let value = v.map(|v| vec![v; 2]);
                let staged = store.put(&mut batch, k, *s, *e, value.as_deref());
                observed = observed.max(*e);
                let live = *e >= live_from(observed);
                assert_eq!(staged, live);
                if live {
                    match value {
                        Some(v) => model.insert((k.clone(), *e, *s), v),
                        None => model.remove(&(k.clone(), *e, *s)),
                    };
                }
                inner.write(&batch, Some(n as i64)).unwrap();
                if live && v.is_some() {
                    assert_eq!(store.get(k, *s, *e).unwrap(), Some(vec![v.unwrap_or(0); 2]));
                }
            }
            SStep::Expire(t) => {
                let mut batch = WriteBatch::new();
                store.expire(&mut batch, *t).unwrap();
                inner.write(&batch, Some(n as i64)).unwrap();
                observed = observed.max(*t);
                let first_live = live_from(observed).div_euclid(INTERVAL);
                if let Some(min) = raw_segments(&*inner).first() {
                    assert!(
                        *min >= first_live,
                        "segment {min} survived expiry (first live {first_live})"
                    );
                }
            }
            SStep::Find(k, e, l) => {
                assert_eq!(
                    store.find_sessions(k, *e, *l).unwrap(),
                    find(&model, observed, k, *e, *l)
                );
            }
            SStep::Fetch(k) => {
                assert_eq!(store.fetch(k).unwrap(), find(&model, observed, k, i64::MIN, i64::MAX));
            }
        }
        assert_eq!(store.observed_stream_time(), observed);
    }
    let lf = live_from(observed);
    let mut all = store.all().unwrap();
    all.sort();
    let mut want: Vec<_> = model
        .iter()
        .filter(|((_, e, _), _)| *e >= lf)
        .map(|((k, e, s), v)| (k.clone(), *s, *e, v.clone()))
        .collect();
    want.sort();
    assert_eq!(all, want);
    for (stored, _) in inner.range(Bound::Unbounded, Bound::Unbounded).unwrap().map(|r| r.unwrap())
    {
        let (k, s, e) = store.decode_key(&stored).unwrap();
        assert_eq!(store.encode_key(&k, s, e), stored);
    }
}

fn rocks(dir: &tempfile::TempDir) -> Arc<dyn KeyValueBytesStore> {
    Arc::new(RocksDbStore::open(&RocksDbEnv::default(), "w", &dir.path().join("w")).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn window_memory_matches_model(steps in proptest::collection::vec(wstep(), 1..60)) {
        run_window(&steps, Arc::new(InMemoryStore::new("w")));
    }

    #[test]
    fn window_rocksdb_matches_model(steps in proptest::collection::vec(wstep(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        run_window(&steps, rocks(&dir));
    }

    #[test]
    fn duplicates_memory_match_model(steps in proptest::collection::vec(dstep(), 1..60)) {
        run_duplicates(&steps, Arc::new(InMemoryStore::new("d")));
    }

    #[test]
    fn duplicates_rocksdb_match_model(steps in proptest::collection::vec(dstep(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        run_duplicates(&steps, rocks(&dir));
    }

    #[test]
    fn session_memory_matches_model(steps in proptest::collection::vec(sstep(), 1..60)) {
        run_session(&steps, Arc::new(InMemoryStore::new("s")));
    }

    #[test]
    fn session_rocksdb_matches_model(steps in proptest::collection::vec(sstep(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        run_session(&steps, rocks(&dir));
    }
}

#[test]
fn negative_timestamps_sort_before_positive() {
    let retention = 1_000_000_000_000_000;
    let store = WindowStore::new(
        Arc::new(InMemoryStore::new("w")),
        retention,
        default_segment_interval(retention),
    );
    let mut batch = WriteBatch::new();
    for t in [5, -5, 0, -60_001, 120_000, -retention / 4, retention / 4] {
        assert!(store.put(&mut batch, b"k", t, Some(&t.to_be_bytes())).unwrap());
    }
    store.inner().write(&batch, None).unwrap();
    let starts: Vec<i64> =
        store.fetch(b"k", i64::MIN, i64::MAX).unwrap().into_iter().map(|(t, _)| t).collect();
    assert_eq!(starts, vec![-retention / 4, -60_001, -5, 0, 5, 120_000, retention / 4]);
    assert_eq!(store.fetch(b"k", -5, 5).unwrap().len(), 3);
    let (k, t) = store.decode_key(&store.encode_key(b"key", -42)).unwrap();
    assert_eq!((k.as_slice(), t), (b"key".as_slice(), -42));
}

#[test]
fn expiry_is_one_range_delete_from_the_lowest_segment() {
    let inner = Arc::new(InMemoryStore::new("w"));
    let store = WindowStore::new(inner.clone(), 60_000, 60_000);
    let mut batch = WriteBatch::new();
    for t in (0..10).map(|i| i * 60_000) {
        store.put(&mut batch, b"k", t, Some(b"v")).unwrap();
    }
    inner.write(&batch, None).unwrap();
    let mut batch = WriteBatch::new();
    // Live from 540_000: segments 0..=8 go, in one op.
    store.expire(&mut batch, 599_999).unwrap();
    assert_eq!(batch.len(), 1);
    inner.write(&batch, None).unwrap();
    // Nothing more to delete: no op staged.
    let mut batch = WriteBatch::new();
    store.expire(&mut batch, 599_999).unwrap();
    assert!(batch.is_empty());
    assert_eq!(store.all().unwrap().len(), 1);
}

#[test]
fn duplicates_of_a_key_and_start_are_all_kept_in_put_order_across_reopens() {
    let inner: Arc<dyn KeyValueBytesStore> = Arc::new(InMemoryStore::new("d"));
    let store = WindowStore::with_duplicates(inner.clone(), 60_000, 60_000);
    let mut batch = WriteBatch::new();
    for v in [b"a", b"b"] {
        assert!(store.put(&mut batch, b"k", 7, Some(v)).unwrap());
    }
    inner.write(&batch, None).unwrap();
    // A restarted task's store continues after the largest sequence number: no overwrite.
    let reopened = WindowStore::with_duplicates(inner.clone(), 60_000, 60_000);
    let mut batch = WriteBatch::new();
    assert!(reopened.put(&mut batch, b"k", 7, Some(b"c")).unwrap());
    inner.write(&batch, None).unwrap();
    let values: Vec<Vec<u8>> =
        reopened.fetch(b"k", 0, 10).unwrap().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert_eq!(reopened.get(b"k", 7).unwrap(), None, "no single value with duplicates");
    // `segment_range` bounds exactly the duplicates of the key in the segment.
    let (lower, upper) = reopened.segment_range(0, b"k", 7, 7);
    let keys: Vec<Vec<u8>> = inner
        .range(Bound::Included(&lower), Bound::Included(&upper))
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(keys.len(), 3);
}
