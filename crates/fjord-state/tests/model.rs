//! Random sequences of batches (puts, deletes, range deletes) and reads against a `BTreeMap`
//! model, for the RocksDB and in-memory stores. The RocksDB run also reopens the store at
//! random points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::Bound;

use fjord_state::{
    InMemoryStore, KeyValueBytesStore, RocksDbEnv, RocksDbStore, WriteBatch, WriteOp,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Write(Vec<WriteOp>, Option<i64>),
    Get(Vec<u8>),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>),
    Flush,
    Reopen,
}

/// Short keys over a tiny alphabet, so that ops collide and prefixes matter.
fn key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0x7f), Just(0xff)], 0..4)
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => key().prop_map(Bound::Included),
        2 => key().prop_map(Bound::Excluded),
    ]
}

fn op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        5 => (key(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(k, v)| WriteOp::Put(k, v)),
        2 => key().prop_map(WriteOp::Delete),
        1 => (key(), key()).prop_map(|(a, b)| WriteOp::DeleteRange(a, b)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (proptest::collection::vec(op(), 0..6), proptest::option::of(0i64..1000))
            .prop_map(|(ops, o)| Step::Write(ops, o)),
        3 => key().prop_map(Step::Get),
        3 => (bound(), bound()).prop_map(|(a, b)| Step::Range(a, b)),
        1 => Just(Step::Flush),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    offset: Option<i64>,
}

impl Model {
    fn apply(&mut self, ops: &[WriteOp], offset: Option<i64>) {
        for op in ops {
            match op {
                WriteOp::Put(k, v) => {
                    self.map.insert(k.clone(), v.clone());
                }
                WriteOp::Delete(k) => {
                    self.map.remove(k);
                }
                WriteOp::DeleteRange(a, b) => self.map.retain(|k, _| !(a <= k && k < b)),
            }
        }
        if offset.is_some() {
            self.offset = offset;
        }
    }

    fn range(&self, from: &Bound<Vec<u8>>, to: &Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.map
            .iter()
            .filter(|(k, _)| {
                let lower = match from {
                    Bound::Included(f) => *k >= f,
                    Bound::Excluded(f) => *k > f,
                    Bound::Unbounded => true,
                };
                let upper = match to {
                    Bound::Included(t) => *k <= t,
                    Bound::Excluded(t) => *k < t,
                    Bound::Unbounded => true,
                };
                lower && upper
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn run(steps: &[Step], mut open: impl FnMut() -> Box<dyn KeyValueBytesStore>, reopens: bool) {
    let mut store = open();
    let mut model = Model::default();
    for step in steps {
        match step {
            Step::Write(ops, offset) => {
                let mut batch = WriteBatch::new();
                for op in ops {
                    match op.clone() {
                        WriteOp::Put(k, v) => batch.put(k, v),
                        WriteOp::Delete(k) => batch.delete(k),
                        WriteOp::DeleteRange(a, b) => batch.delete_range(a, b),
                    }
                }
                store.write(&batch, *offset).unwrap();
                model.apply(ops, *offset);
            }
            Step::Get(k) => {
                assert_eq!(store.get(k).unwrap(), model.map.get(k).cloned(), "get {k:?}")
            }
            Step::Range(a, b) => {
                let got: Vec<_> =
                    store.range(as_ref(a), as_ref(b)).unwrap().map(|r| r.unwrap()).collect();
                assert_eq!(got, model.range(a, b), "range {a:?}..{b:?}");
            }
            Step::Flush => store.flush().unwrap(),
            Step::Reopen => {
                if reopens {
                    drop(store);
                    store = open();
                }
            }
        }
        assert_eq!(store.changelog_offset().unwrap(), model.offset);
    }
    let all: Vec<_> =
        store.range(Bound::Unbounded, Bound::Unbounded).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(all, model.range(&Bound::Unbounded, &Bound::Unbounded));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_model(steps in proptest::collection::vec(step(), 1..60)) {
        run(&steps, || Box::new(InMemoryStore::new("mem")), false);
    }

    #[test]
    fn rocksdb_store_matches_model(steps in proptest::collection::vec(step(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let env = RocksDbEnv::default();
        let path = dir.path().join("store");
        run(&steps, || Box::new(RocksDbStore::open(&env, "store", &path).unwrap()), true);
    }
}
