//! Producer id allocation (Kafka's `ProducerIdManager`): ids are handed out from blocks, and
//! the end of the current block is persisted before any id from it is used, so an id is never
//! handed out twice, across restarts too.

use std::path::{Path, PathBuf};

use fjord_log::LogError;
use fjord_log::checkpoint::write_atomically;
use parking_lot::Mutex;

use crate::error::Result;

/// Ids reserved per persisted block, as Kafka's `PRODUCER_ID_BLOCK_SIZE`.
const BLOCK_SIZE: i64 = 1000;

/// Hands out producer ids.
#[derive(Debug)]
pub struct ProducerIdManager {
    path: PathBuf,
    /// Next id to hand out and the end (exclusive) of the persisted block.
    state: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// Opens the allocator whose state lives in `<data dir>/meta/producer-id-block`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("meta").join("producer-id-block");
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|e| LogError::BadMetadata {
                path: path.clone(),
                reason: format!("not a number: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(LogError::Io { op: "read", path, source: e }.into()),
        };
        // Everything below the persisted block end may have been handed out: start after it.
        Ok(ProducerIdManager { path, state: Mutex::new((start, start)) })
    }

    /// The next producer id.
    pub fn next(&self) -> Result<i64> {
        let mut state = self.state.lock();
        if state.0 >= state.1 {
            let end = state.0 + BLOCK_SIZE;
            write_atomically(&self.path, end.to_string().as_bytes()).map_err(|e| LogError::Io {
                op: "write",
                path: self.path.clone(),
                source: e,
            })?;
            state.1 = end;
        }
        let id = state.0;
        state.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("meta")).unwrap();
        let first: Vec<i64> = {
            let ids = ProducerIdManager::open(dir.path()).unwrap();
            (0..1500).map(|_| ids.next().unwrap()).collect()
        };
        let ids = ProducerIdManager::open(dir.path()).unwrap();
        let next = ids.next().unwrap();
        assert!(next > *first.iter().max().unwrap());
        let unique: std::collections::HashSet<_> = first.iter().collect();
        assert_eq!(unique.len(), first.len());
    }
}
