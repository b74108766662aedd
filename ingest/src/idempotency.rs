//! `Idempotency-Key`: a retried request returns the first answer and appends nothing.
//!
//! Keys live in memory, scoped per table, for `ttl` (default 24 h). They survive restarts: a
//! key is written into the request's WAL record, and when that record's segment is deleted
//! the key moves to `keys.log` in the WAL directory (one JSON line each), which is read back,
//! and compacted, on start.
//!
//! This module builds on the log ([`crate::wal`]: [`KeyRecord`], [`Counts`]); the log never
//! uses it. A full disk never costs a key: the log deletes a segment only after its keys are
//! in `keys.log`, a failed append to `keys.log` is cut back off (so the next one starts on a
//! line of its own), and a compaction that cannot be written leaves the old file in place.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::wal::Counts;
pub use crate::wal::KeyRecord;

/// What the first request with a key was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAnswer {
    /// Its WAL sequence number.
    pub seq: u64,
    /// How many records it accepted, rejected, and left out as duplicates.
    pub counts: Counts,
    /// When it was received (ms since the epoch).
    pub received_ms: i64,
}

enum Slot {
    /// The first request is still being logged; later ones wait for its answer.
    InFlight(watch::Receiver<Option<KeyAnswer>>),
    Done(KeyAnswer),
}

/// The outcome of [`KeyStore::begin`].
pub enum Begin {
    /// A request with this key was answered before.
    Seen(KeyAnswer),
    /// A request with this key is in flight; wait for its answer (`None`: it failed, retry).
    Wait(watch::Receiver<Option<KeyAnswer>>),
    /// First time: go ahead, then [`KeyGuard::complete`].
    Proceed(KeyGuard),
}

/// Held by the first request with a key; dropping it without completing frees the key. It
/// owns its store, so the step that makes a record durable can take it along and complete it
/// even when the request that began it is gone.
pub struct KeyGuard {
    store: Arc<KeyStore>,
    id: (String, String),
    sender: Option<watch::Sender<Option<KeyAnswer>>>,
}

impl KeyGuard {
    /// Records the answer for later requests with the same key.
    pub fn complete(mut self, answer: KeyAnswer) {
        self.store.slots.lock().expect("key store").insert(self.id.clone(), Slot::Done(answer));
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Some(answer));
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.store.slots.lock().expect("key store").remove(&self.id);
            let _ = sender.send(None);
        }
    }
}

/// Remembered idempotency keys.
pub struct KeyStore {
    path: PathBuf,
    ttl: Duration,
    slots: Mutex<HashMap<(String, String), Slot>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl KeyStore {
    /// Loads `keys.log` from `dir` (dropping expired keys and rewriting the file without
    /// them) plus the keys still in WAL records.
    pub fn open(
        dir: &Path,
        ttl: Duration,
        from_wal: impl IntoIterator<Item = KeyRecord>,
    ) -> std::io::Result<Self> {
        let path = dir.join("keys.log");
        let cutoff = now_ms() - ttl.as_millis() as i64;
        // A line torn by a crash mid-append is skipped.
        let mut kept: Vec<KeyRecord> = match std::fs::read(&path) {
            Ok(text) => text
                .split(|b| *b == b'\n')
                .filter_map(|line| serde_json::from_slice::<KeyRecord>(line).ok())
                .filter(|r| r.received_ms >= cutoff)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Rewrite without the expired keys (write aside, then rename over). Not being able to
        // (a full disk) costs nothing but space: the old file stays.
        if let Err(e) = compact(dir, &path, &kept) {
            tracing::warn!(file = %path.display(), error = %e, "cannot compact keys.log; keeping it as it is");
        }
        kept.extend(from_wal.into_iter().filter(|r| r.received_ms >= cutoff));
        let slots = kept
            .into_iter()
            .map(|r| {
                let answer = KeyAnswer { seq: r.seq, counts: r.counts, received_ms: r.received_ms };
                ((r.table, r.key), Slot::Done(answer))
            })
            .collect();
        Ok(KeyStore { path, ttl, slots: Mutex::new(slots) })
    }

    /// Looks `key` up for `table`.
    pub fn begin(self: &Arc<Self>, table: &str, key: &str) -> Begin {
        let id = (table.to_string(), key.to_string());
        let mut slots = self.slots.lock().expect("key store");
        match slots.get(&id) {
            Some(Slot::Done(answer))
                if answer.received_ms >= now_ms() - self.ttl.as_millis() as i64 =>
            {
                return Begin::Seen(*answer)
            }
            Some(Slot::InFlight(receiver)) => return Begin::Wait(receiver.clone()),
            _ => {}
        }
        let (sender, receiver) = watch::channel(None);
        slots.insert(id.clone(), Slot::InFlight(receiver));
        Begin::Proceed(KeyGuard { store: self.clone(), id, sender: Some(sender) })
    }

    /// Keeps `records` (keys whose WAL segment is being deleted) in `keys.log`, durably. On
    /// failure (a full disk) the file is cut back to where it was, so that no partial line
    /// is left for the next append to run into.
    pub fn persist(&self, records: &[KeyRecord]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        for record in records {
            serde_json::to_writer(&mut out, record)?;
            out.push(b'\n');
        }
        let mut file =
            std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
        let before = file.metadata()?.len();
        if before > 0 {
            // After a crash mid-append, start on a line of its own.
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                out.insert(0, b'\n');
            }
        }
        let written = file.write_all(&out).and_then(|()| file.sync_data());
        if written.is_err() {
            if let Err(e) = file.set_len(before).and_then(|()| file.sync_data()) {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot cut a failed append off keys.log; the partial line is skipped when the file is read");
            }
        }
        written
    }

    /// Forgets keys older than the retention (called now and then).
    pub fn expire(&self) {
        let cutoff = now_ms() - self.ttl.as_millis() as i64;
        self.slots
            .lock()
            .expect("key store")
            .retain(|_, slot| !matches!(slot, Slot::Done(a) if a.received_ms < cutoff));
    }
}

/// Writes `records` over `path` (aside, synced, renamed over).
fn compact(dir: &Path, path: &Path, records: &[KeyRecord]) -> std::io::Result<()> {
    let aside = dir.join("keys.log.new");
    let written = (|| {
        let mut out = Vec::new();
        for record in records {
            serde_json::to_writer(&mut out, record)?;
            out.push(b'\n');
        }
        let mut file = std::fs::File::create(&aside)?;
        file.write_all(&out)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(KeyStore::open(dir.path(), Duration::from_secs(3600), []).unwrap());
        let Begin::Proceed(guard) = store.begin("default.t", "k1") else { panic!("first use") };
        assert!(matches!(store.begin("default.t", "k1"), Begin::Wait(_)));
        assert!(matches!(store.begin("default.u", "k1"), Begin::Proceed(_)), "keys are per table");
        let counts = Counts { accepted: 3, rejected: 1, duplicates: 0 };
        let answer = KeyAnswer { seq: 5, counts, received_ms: now_ms() };
        guard.complete(answer);
        assert!(matches!(store.begin("default.t", "k1"), Begin::Seen(a) if a == answer));

        // A failed first request frees its key.
        let Begin::Proceed(guard) = store.begin("default.t", "k2") else { panic!() };
        drop(guard);
        assert!(matches!(store.begin("default.t", "k2"), Begin::Proceed(_)));

        let old = KeyRecord {
            table: "default.t".into(),
            key: "old".into(),
            seq: 1,
            counts: Counts { accepted: 1, ..Counts::default() },
            received_ms: 0,
        };
        let kept = KeyRecord {
            table: "default.t".into(),
            key: "k1".into(),
            seq: 5,
            counts,
            received_ms: answer.received_ms,
        };
        store.persist(&[old, kept]).unwrap();
        let reopened = Arc::new(KeyStore::open(dir.path(), Duration::from_secs(3600), []).unwrap());
        assert!(matches!(reopened.begin("default.t", "k1"), Begin::Seen(a) if a == answer));
        assert!(
            matches!(reopened.begin("default.t", "old"), Begin::Proceed(_)),
            "expired keys are dropped"
        );
        let text = std::fs::read_to_string(dir.path().join("keys.log")).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted on open");
    }

    fn key(key: &str) -> KeyRecord {
        KeyRecord {
            table: "default.t".into(),
            key: key.into(),
            seq: 1,
            counts: Counts { accepted: 1, ..Counts::default() },
            received_ms: now_ms(),
        }
    }

    #[test]
    fn keys_survive_a_full_disk() {
        let disk = crate::wal::tests::tmpfs::Tmpfs::mount(256);
        let ttl = Duration::from_secs(3600);
        let store = KeyStore::open(disk.path(), ttl, []).unwrap();
        store.persist(&[key("k1")]).unwrap();
        let filler = disk.fill();
        // More than the page keys.log has left: the append fails, and is cut back off.
        let many: Vec<KeyRecord> = (0..100).map(|i| key(&format!("lost-{i}"))).collect();
        let error = store.persist(&many).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28), "{error}");
        // A restart on the full disk works (keys.log cannot be compacted, and stays).
        drop(store);
        let store = Arc::new(KeyStore::open(disk.path(), ttl, []).unwrap());
        assert!(matches!(store.begin("default.t", "k1"), Begin::Seen(_)));
        disk.free(&filler);
        store.persist(&[key("k2")]).unwrap();
        let reopened = Arc::new(KeyStore::open(disk.path(), ttl, []).unwrap());
        for k in ["k1", "k2"] {
            assert!(matches!(reopened.begin("default.t", k), Begin::Seen(_)), "{k} is kept");
        }
        let text = std::fs::read_to_string(disk.path().join("keys.log")).unwrap();
        assert_eq!(text.lines().count(), 2, "no partial line is left: {text}");
    }

    #[test]
    fn an_append_after_a_torn_line_starts_on_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(3600);
        let store = KeyStore::open(dir.path(), ttl, []).unwrap();
        store.persist(&[key("k1")]).unwrap();
        // A crash in the middle of an append.
        let mut file =
            std::fs::OpenOptions::new().append(true).open(dir.path().join("keys.log")).unwrap();
        file.write_all(br#"{"table":"default.t","ke"#).unwrap();
        store.persist(&[key("k2")]).unwrap();
        let reopened = Arc::new(KeyStore::open(dir.path(), ttl, []).unwrap());
        for k in ["k1", "k2"] {
            assert!(matches!(reopened.begin("default.t", k), Begin::Seen(_)), "{k} is kept");
        }
    }
}
