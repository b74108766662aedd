//! `Idempotency-Key`: a retried request returns the first answer and appends nothing.
//!
//! Keys live in memory, scoped per table, for `ttl` (default 24 h). They survive restarts: a
//! key is written into the request's WAL record, and when that record's segment is deleted
//! the key moves to `keys.log` in the WAL directory (one JSON line each), which is read back,
//! and compacted, on start.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::wal::Counts;

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

/// A key as persisted in `keys.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Qualified table name.
    pub table: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// The first request's sequence number.
    pub seq: u64,
    /// Its answer (Tarn 0.1 wrote `accepted` alone at the top level, which reads the same).
    #[serde(flatten)]
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
pub enum Begin<'a> {
    /// A request with this key was answered before.
    Seen(KeyAnswer),
    /// A request with this key is in flight; wait for its answer (`None`: it failed, retry).
    Wait(watch::Receiver<Option<KeyAnswer>>),
    /// First time: go ahead, then [`KeyGuard::complete`].
    Proceed(KeyGuard<'a>),
}

/// Held by the first request with a key; dropping it without completing frees the key.
pub struct KeyGuard<'a> {
    store: &'a KeyStore,
    id: (String, String),
    sender: Option<watch::Sender<Option<KeyAnswer>>>,
}

impl KeyGuard<'_> {
    /// Records the answer for later requests with the same key.
    pub fn complete(mut self, answer: KeyAnswer) {
        self.store.slots.lock().expect("key store").insert(self.id.clone(), Slot::Done(answer));
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Some(answer));
        }
    }
}

impl Drop for KeyGuard<'_> {
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
        dir: &std::path::Path,
        ttl: Duration,
        from_wal: impl IntoIterator<Item = KeyRecord>,
    ) -> std::io::Result<Self> {
        let path = dir.join("keys.log");
        let cutoff = now_ms() - ttl.as_millis() as i64;
        let mut kept: Vec<KeyRecord> = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|line| serde_json::from_str::<KeyRecord>(line).ok())
                .filter(|r| r.received_ms >= cutoff)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Rewrite without the expired keys (write aside, then rename over).
        let aside = dir.join("keys.log.new");
        {
            let mut file = std::fs::File::create(&aside)?;
            for record in &kept {
                serde_json::to_writer(&mut file, record)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()?;
        }
        std::fs::rename(&aside, &path)?;
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
    pub fn begin(&self, table: &str, key: &str) -> Begin<'_> {
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
        Begin::Proceed(KeyGuard { store: self, id, sender: Some(sender) })
    }

    /// Keeps `records` (keys whose WAL segment is being deleted) in `keys.log`.
    pub fn persist(&self, records: &[KeyRecord]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut out = Vec::new();
        for record in records {
            serde_json::to_writer(&mut out, record)?;
            out.push(b'\n');
        }
        file.write_all(&out)?;
        file.sync_data()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path(), Duration::from_secs(3600), []).unwrap();
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
        let reopened = KeyStore::open(dir.path(), Duration::from_secs(3600), []).unwrap();
        assert!(matches!(reopened.begin("default.t", "k1"), Begin::Seen(a) if a == answer));
        assert!(
            matches!(reopened.begin("default.t", "old"), Begin::Proceed(_)),
            "expired keys are dropped"
        );
        let text = std::fs::read_to_string(dir.path().join("keys.log")).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted on open");
    }
}
