//! Small metadata files written atomically: write a temporary file, fsync it, rename it over
//! the old one, fsync the directory. A crash leaves either the old or the new file, never a torn
//! one.
//!
//! Each partition keeps `partition.checkpoint`, a few `name=value` lines:
//! - `recovery-point`: every batch below this offset was fsynced; recovery after an unclean stop
//!   validates from the segment holding it (Kafka's recovery-point-offset-checkpoint).
//! - `log-start-offset`: the first readable offset, which may lie inside the first segment.
//! - `cleaner-offset`: where the next compaction's dirty section starts.
//!
//! A missing or unreadable checkpoint only costs time (recovery validates every segment), never
//! data.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` atomically and durably.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory so that file creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// File name of a partition's checkpoint.
pub const PARTITION_CHECKPOINT: &str = "partition.checkpoint";

/// The offsets a partition checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionCheckpoint {
    /// Everything below is on disk.
    pub recovery_point: i64,
    /// First readable offset.
    pub log_start_offset: i64,
    /// Start of the dirty section for compaction.
    pub cleaner_offset: i64,
}

impl PartitionCheckpoint {
    /// Reads the checkpoint in `dir`; `None` if it is missing or unreadable.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(PARTITION_CHECKPOINT)).ok()?;
        let mut checkpoint = PartitionCheckpoint::default();
        let mut seen = 0;
        for line in text.lines() {
            let (name, value) = line.split_once('=')?;
            let value: i64 = value.trim().parse().ok()?;
            match name.trim() {
                "recovery-point" => checkpoint.recovery_point = value,
                "log-start-offset" => checkpoint.log_start_offset = value,
                "cleaner-offset" => checkpoint.cleaner_offset = value,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 3).then_some(checkpoint)
    }

    /// Writes the checkpoint into `dir` atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = format!(
            "recovery-point={}\nlog-start-offset={}\ncleaner-offset={}\n",
            self.recovery_point, self.log_start_offset, self.cleaner_offset
        );
        write_atomically(&dir.join(PARTITION_CHECKPOINT), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_garbage_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(PartitionCheckpoint::read(dir.path()), None);
        let c = PartitionCheckpoint { recovery_point: 10, log_start_offset: 3, cleaner_offset: 7 };
        c.write(dir.path()).unwrap();
        assert_eq!(PartitionCheckpoint::read(dir.path()), Some(c));
        std::fs::write(dir.path().join(PARTITION_CHECKPOINT), "recovery-point=x").unwrap();
        assert_eq!(PartitionCheckpoint::read(dir.path()), None);
    }
}
