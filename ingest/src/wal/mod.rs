//! The write-ahead log: accepted requests are on local disk before they are acknowledged.
//!
//! One log per Tarn process, in `--wal-dir`, made of segment files `wal-<first seq>.log`. A
//! single writer thread takes every request queued since its last write, appends them all and
//! calls `fsync` once (group commit), then hands each record to the [`WalSink`] in sequence
//! order and acknowledges it. Sequence numbers grow by one per record and never repeat, also
//! across restarts: the newest segment file is never deleted and its name records where the
//! sequence stands.
//!
//! A sealed segment is deleted once every table with records in it has committed them to the
//! lake ([`Wal::committed`]); before that, the idempotency keys it holds are handed to the
//! [`KeyStore`](crate::idempotency::KeyStore) so they outlive the segment.
//!
//! A record holds what one request will append, already decoded and checked against the
//! table's contract: the rows for the table, the rejected rows for `<table>_rejected`, the raw
//! payload for `<table>_raw`, each as an Arrow IPC stream ([`WalPart`]). Replay therefore
//! appends exactly what was acknowledged, whatever the table's definition says by then (and
//! whenever `now()` is). Tables without a contract log the request body itself.
//!
//! Record frame: `len: u32 LE | crc32(payload): u32 LE | payload`, payload: `2u8 | seq: u64 |
//! received_ms: i64 | table: str | key: str | accepted: u64 | rejected: u64 | duplicates: u64 |
//! parts: u16 | (table: str | kind: u8 | rows: u64 | len: u32 | data)*`, where `str` is a u16
//! length and UTF-8, and `data` an Arrow IPC stream (kind 0) or a request body (1 JSON,
//! 2 NDJSON, 3 CSV) for tables without a contract. Version 1 records (Tarn 0.1: the request body itself) are still read. A
//! torn frame at the end of the newest segment (a crash mid-write, never acknowledged) is cut
//! off on open; damage anywhere else stops the server from starting rather than losing data
//! silently.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use bytes::Bytes;
use serde::Deserialize;
use tarn_catalog::TableName;
use tokio::sync::{mpsc, oneshot};

use crate::idempotency::KeyRecord;
use crate::Format;

/// Settings of the write-ahead log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WalConfig {
    /// Where the log lives (local disk, never object storage).
    pub dir: PathBuf,
    /// Above this many bytes of not-yet-committed records, ingest answers 503 with
    /// `Retry-After` instead of growing the log (and the memory holding those records).
    pub max_bytes: u64,
    /// A segment is sealed, and a new one started, when it passes this size.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: PathBuf::from(".tarn/wal"),
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a record could not be logged.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The log holds `max_bytes` of records the lake has not committed yet.
    #[error(
        "the write-ahead log is full ({used} of {limit} bytes wait for the lake to commit them); \
         storage is not keeping up or unreachable, retry later"
    )]
    Full {
        /// Bytes waiting.
        used: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Writing or syncing the log failed (e.g. the disk is full).
    #[error("cannot write the write-ahead log in {dir}: {source}")]
    Io {
        /// The WAL directory.
        dir: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The log on disk is damaged somewhere other than its very end.
    #[error("the write-ahead log is damaged: {0}")]
    Corrupt(String),
    /// Another process uses the same WAL directory.
    #[error("the write-ahead log in {0} is in use by another Tarn process")]
    Locked(String),
    /// The writer has stopped (the server is shutting down).
    #[error("the write-ahead log is closed")]
    Closed,
}

/// How many records a request accepted, rejected (to `<table>_rejected`) and left out as
/// duplicates of its table's unique key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Counts {
    /// Rows appended to the table.
    pub accepted: usize,
    /// Rows that broke the contract.
    #[serde(default)]
    pub rejected: usize,
    /// Rows whose unique key was in the table already (or earlier in the request).
    #[serde(default)]
    pub duplicates: usize,
}

/// Rows for one table.
#[derive(Debug, Clone)]
pub struct WalPart {
    /// The table they go to.
    pub table: TableName,
    /// How many.
    pub rows: usize,
    /// As stored: an Arrow IPC stream, or a request body ([`WalPart::body`]).
    pub data: Bytes,
    /// The decoded rows; empty for records read back from disk until [`WalPart::decode`].
    pub batches: Vec<RecordBatch>,
    /// When `data` is a request body rather than checked rows: how it is framed. Bodies for
    /// tables without a declared contract are logged as they came (smaller than their rows,
    /// and nothing to encode on the hot path) and decoded against the table's schema on
    /// replay, which gives the same rows: such tables have no rules, derived columns or keys.
    pub body: Option<Format>,
}

impl WalPart {
    /// Rows for `table`, encoded for the log (an Arrow IPC stream).
    pub fn new(
        table: TableName,
        batches: Vec<RecordBatch>,
    ) -> Result<Self, arrow::error::ArrowError> {
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        let mut data = Vec::new();
        if let Some(first) = batches.first() {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut data, &first.schema())?;
            for batch in &batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        Ok(WalPart { table, rows, data: Bytes::from(data), batches, body: None })
    }

    /// Rows for `table` logged as the request `body` they were decoded from.
    pub fn body(table: TableName, format: Format, body: Bytes, batches: Vec<RecordBatch>) -> Self {
        let rows = batches.iter().map(|b| b.num_rows()).sum();
        WalPart { table, rows, data: body, batches, body: Some(format) }
    }

    /// Decodes the IPC stream read back from disk into `batches`.
    pub fn decode(&mut self) -> Result<(), arrow::error::ArrowError> {
        if self.body.is_some() || self.data.is_empty() || !self.batches.is_empty() {
            return Ok(());
        }
        let reader = arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(self.data.clone()),
            None,
        )?;
        self.batches = reader.collect::<Result<Vec<_>, _>>()?;
        Ok(())
    }
}

/// A record as stored in the log: one request.
#[derive(Debug, Clone)]
pub struct WalRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The table the request was for (its idempotency keys are scoped to it).
    pub table: TableName,
    /// The request's `Idempotency-Key`, if any.
    pub key: Option<String>,
    /// When it was received (ms since the epoch).
    pub received_ms: i64,
    /// The answer it got.
    pub counts: Counts,
    /// What it appends, per table.
    pub parts: Vec<WalPart>,
}

impl WalRecord {
    /// Bytes of row data it holds.
    pub fn data_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.data.len() as u64).sum()
    }

    /// Its idempotency key as remembered after its segment is deleted.
    pub fn key_record(&self) -> Option<KeyRecord> {
        self.key.as_ref().map(|key| KeyRecord {
            table: self.table.to_string(),
            key: key.clone(),
            seq: self.seq,
            counts: self.counts,
            received_ms: self.received_ms,
        })
    }
}

/// Receives each record once it is durable, in sequence order, before it is acknowledged.
pub trait WalSink: Send + Sync + 'static {
    /// The parts of record `seq` are durable.
    fn durable(&self, seq: u64, parts: Vec<WalPart>);
}

struct Pending {
    record: WalRecord,
    reply: oneshot::Sender<Result<u64, WalError>>,
}

#[derive(Debug, Default)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Highest sequence number per table in this segment.
    tables: HashMap<TableName, u64>,
    /// Idempotency keys recorded in this segment.
    keys: Vec<KeyRecord>,
}

impl Segment {
    fn add(&mut self, record: &WalRecord, frame_bytes: u64) {
        self.bytes += frame_bytes;
        for part in &record.parts {
            let max = self.tables.entry(part.table.clone()).or_insert(0);
            *max = (*max).max(record.seq);
        }
        self.keys.extend(record.key_record());
    }
}

#[derive(Debug, Default)]
struct State {
    sealed: VecDeque<Segment>,
    active: Segment,
    /// Bytes in all segments that still exist.
    bytes: u64,
    /// Highest committed sequence number per table.
    committed: HashMap<TableName, u64>,
}

/// The write-ahead log of this process.
pub struct Wal {
    config: WalConfig,
    state: Arc<Mutex<State>>,
    queued_bytes: Arc<AtomicU64>,
    sender: Mutex<Option<mpsc::Sender<Pending>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The locked `lock` file: held while the log is open, released by [`Wal::close`].
    lock: Mutex<Option<File>>,
}

/// What [`Wal::open`] found on disk.
pub struct Recovered {
    /// The log, ready for appends.
    pub wal: Wal,
    /// Every record still in the log, in sequence order.
    pub records: Vec<WalRecord>,
}

const FRAME_HEADER: usize = 8;
const PAYLOAD_VERSION: u8 = 2;
/// Records of Tarn 0.1 hold the request body; they are read, never written.
const LEGACY_PAYLOAD_VERSION: u8 = 1;
/// Records gathered into one write + fsync at most.
const MAX_GROUP: usize = 4096;

fn io_error(dir: &Path) -> impl Fn(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { dir: dir.display().to_string(), source }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.log"))
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`, reads back every record in it, and starts
    /// the writer thread. Records become durable through `sink`.
    pub fn open(config: WalConfig, sink: Arc<dyn WalSink>) -> Result<Recovered, WalError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io_error(&dir))?;
        if lock.try_lock().is_err() {
            return Err(WalError::Locked(dir.display().to_string()));
        }

        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io_error(&dir))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let seq = name.strip_prefix("wal-")?.strip_suffix(".log")?.parse().ok()?;
                Some((seq, entry.path()))
            })
            .collect();
        files.sort();

        let mut state = State::default();
        let mut records = Vec::new();
        let mut next_seq = 1;
        let count = files.len();
        for (i, (first_seq, path)) in files.iter().enumerate() {
            let last = i + 1 == count;
            let (segment_records, valid_len) = read_segment(path, last)?;
            let mut segment = Segment { path: path.clone(), ..Default::default() };
            next_seq = next_seq.max(*first_seq);
            for (record, frame_bytes) in segment_records {
                segment.add(&record, frame_bytes);
                next_seq = next_seq.max(record.seq + 1);
                records.push(record);
            }
            if last {
                let file = OpenOptions::new().write(true).open(path).map_err(io_error(&dir))?;
                if file.metadata().map_err(io_error(&dir))?.len() != valid_len {
                    tracing::warn!(segment = %path.display(), "cutting off a torn record at the end of the write-ahead log (it was never acknowledged)");
                    file.set_len(valid_len).map_err(io_error(&dir))?;
                    file.sync_all().map_err(io_error(&dir))?;
                }
                segment.bytes = valid_len;
                state.bytes += valid_len;
                state.active = segment;
            } else {
                state.bytes += segment.bytes;
                state.sealed.push_back(segment);
            }
        }
        let active_file = if count == 0 {
            let path = segment_path(&dir, next_seq);
            state.active = Segment { path: path.clone(), ..Default::default() };
            create_segment(&dir, &path)?
        } else {
            let mut file =
                OpenOptions::new().append(true).open(&state.active.path).map_err(io_error(&dir))?;
            file.seek(SeekFrom::End(0)).map_err(io_error(&dir))?;
            file
        };
        if !records.is_empty() {
            tracing::info!(records = records.len(), bytes = state.bytes, dir = %dir.display(), "write-ahead log holds records to check against the lake");
        }

        let state = Arc::new(Mutex::new(state));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let (sender, receiver) = mpsc::channel(MAX_GROUP);
        let writer = Writer {
            dir: dir.clone(),
            segment_bytes: config.segment_bytes,
            file: active_file,
            next_seq,
            state: state.clone(),
            queued_bytes: queued_bytes.clone(),
            sink,
        };
        let handle = std::thread::Builder::new()
            .name("tarn-wal".into())
            .spawn(move || writer.run(receiver))
            .map_err(io_error(&dir))?;
        let wal = Wal {
            config,
            state,
            queued_bytes,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(handle)),
            lock: Mutex::new(Some(lock)),
        };
        Ok(Recovered { wal, records })
    }

    /// Logs `record` (its `seq` is assigned here); returns the sequence number once the
    /// record is on disk and its parts have been handed to the sink.
    pub async fn append(&self, record: WalRecord) -> Result<u64, WalError> {
        let size = record.data_bytes() + 64;
        let used =
            self.state.lock().expect("wal state").bytes + self.queued_bytes.load(Ordering::Relaxed);
        if used + size > self.config.max_bytes {
            return Err(WalError::Full { used, limit: self.config.max_bytes });
        }
        let sender = self.sender.lock().expect("wal sender").clone().ok_or(WalError::Closed)?;
        self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        if sender.send(Pending { record, reply }).await.is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return Err(WalError::Closed);
        }
        answer.await.unwrap_or(Err(WalError::Closed))
    }

    /// Records that `table`'s records up to `seq` are in the lake, and deletes the sealed
    /// segments that hold nothing uncommitted any more. Returns the idempotency keys of the
    /// deleted segments, which the caller must keep elsewhere.
    pub fn committed(&self, table: &TableName, seq: u64) -> Vec<KeyRecord> {
        let mut state = self.state.lock().expect("wal state");
        let known = state.committed.entry(table.clone()).or_insert(0);
        *known = (*known).max(seq);
        let mut keys = Vec::new();
        let mut kept = VecDeque::new();
        let sealed = std::mem::take(&mut state.sealed);
        for segment in sealed {
            let done = segment
                .tables
                .iter()
                .all(|(t, max)| state.committed.get(t).is_some_and(|c| c >= max));
            if done {
                match std::fs::remove_file(&segment.path) {
                    Ok(()) => {
                        state.bytes -= segment.bytes;
                        keys.extend(segment.keys);
                        tracing::debug!(segment = %segment.path.display(), "deleted a committed write-ahead log segment");
                    }
                    Err(e) => {
                        tracing::warn!(segment = %segment.path.display(), error = %e, "cannot delete a committed write-ahead log segment");
                        kept.push_back(segment);
                    }
                }
            } else {
                kept.push_back(segment);
            }
        }
        state.sealed = kept;
        keys
    }

    /// Bytes the log holds (records not yet committed, and committed ones in segments that
    /// also hold uncommitted records).
    pub fn bytes(&self) -> u64 {
        self.state.lock().expect("wal state").bytes
    }

    /// Stops the writer after the records already queued and releases the directory.
    pub fn close(&self) {
        self.sender.lock().expect("wal sender").take();
        if let Some(handle) = self.writer.lock().expect("wal writer").take() {
            let _ = handle.join();
        }
        self.lock.lock().expect("wal lock").take();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

fn create_segment(dir: &Path, path: &Path) -> Result<File, WalError> {
    let file =
        OpenOptions::new().create_new(true).append(true).open(path).map_err(io_error(dir))?;
    // Make the new file's name durable too.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    Ok(file)
}

struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    file: File,
    next_seq: u64,
    state: Arc<Mutex<State>>,
    queued_bytes: Arc<AtomicU64>,
    sink: Arc<dyn WalSink>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Pending>) {
        let mut buffer = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(pending) => group.push(pending),
                    Err(_) => break,
                }
            }
            buffer.clear();
            let mut frames = Vec::with_capacity(group.len());
            for pending in &mut group {
                pending.record.seq = self.next_seq;
                self.next_seq += 1;
                let start = buffer.len();
                encode(&mut buffer, &pending.record);
                frames.push((buffer.len() - start) as u64);
            }
            let queued: u64 = group.iter().map(|p| p.record.data_bytes() + 64).sum();
            let written = self.file.write_all(&buffer).and_then(|()| self.file.sync_data());
            match written {
                Ok(()) => {
                    {
                        let mut state = self.state.lock().expect("wal state");
                        for (pending, frame) in group.iter().zip(&frames) {
                            state.active.add(&pending.record, *frame);
                        }
                        state.bytes += buffer.len() as u64;
                    }
                    self.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
                    for pending in group {
                        let seq = pending.record.seq;
                        self.sink.durable(seq, pending.record.parts);
                        let _ = pending.reply.send(Ok(seq));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, dir = %self.dir.display(), "writing the write-ahead log failed; the requests get an error");
                    self.queued_bytes.fetch_sub(queued, Ordering::Relaxed);
                    // Drop what may have been partly written, and reuse the numbers.
                    let valid = self.state.lock().expect("wal state").active.bytes;
                    let _ = self.file.set_len(valid);
                    self.next_seq -= group.len() as u64;
                    for pending in group {
                        let error = WalError::Io {
                            dir: self.dir.display().to_string(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        };
                        let _ = pending.reply.send(Err(error));
                    }
                }
            }
            if self.state.lock().expect("wal state").active.bytes >= self.segment_bytes {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "cannot start a new write-ahead log segment; continuing in the current one");
                }
            }
        }
    }

    /// Seals the active segment and starts the next one, named after the next sequence number.
    fn rotate(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.next_seq);
        let file = create_segment(&self.dir, &path)?;
        self.file = file;
        let mut state = self.state.lock().expect("wal state");
        let sealed = std::mem::replace(&mut state.active, Segment { path, ..Default::default() });
        state.sealed.push_back(sealed);
        Ok(())
    }
}

fn format_code(format: Format) -> u8 {
    match format {
        Format::Json => 1,
        Format::Ndjson => 2,
        Format::Csv => 3,
    }
}

fn format_of(code: u8) -> Option<Format> {
    Some(match code {
        1 => Format::Json,
        2 => Format::Ndjson,
        3 => Format::Csv,
        _ => return None,
    })
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the record's frame to `out`.
fn encode(out: &mut Vec<u8>, record: &WalRecord) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(PAYLOAD_VERSION);
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.received_ms.to_le_bytes());
    put_str(out, &record.table.to_string());
    put_str(out, record.key.as_deref().unwrap_or(""));
    for n in [record.counts.accepted, record.counts.rejected, record.counts.duplicates] {
        out.extend_from_slice(&(n as u64).to_le_bytes());
    }
    out.extend_from_slice(&(record.parts.len() as u16).to_le_bytes());
    for part in &record.parts {
        put_str(out, &part.table.to_string());
        out.push(part.body.map_or(0, format_code));
        out.extend_from_slice(&(part.rows as u64).to_le_bytes());
        out.extend_from_slice(&(part.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&part.data);
    }
    let payload = &out[start + FRAME_HEADER..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn decode(payload: &[u8]) -> Option<WalRecord> {
    let mut at = 0;
    let mut take = |n: usize| {
        let slice = payload.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let version = take(1)?[0];
    let u64_of = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
    let seq = u64_of(take(8)?)?;
    let received_ms = u64_of(take(8)?)? as i64;
    if version == LEGACY_PAYLOAD_VERSION {
        let format = format_of(take(1)?[0])?;
        let rows = u64_of(take(8)?)? as usize;
        let table_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let table = TableName::parse(std::str::from_utf8(take(table_len)?).ok()?).ok()?;
        let key_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(take(key_len)?).ok()?.to_string();
        let body = Bytes::copy_from_slice(payload.get(at..)?);
        let part = WalPart {
            table: table.clone(),
            rows,
            data: body,
            batches: Vec::new(),
            body: Some(format),
        };
        return Some(WalRecord {
            seq,
            table,
            key: (!key.is_empty()).then_some(key),
            received_ms,
            counts: Counts { accepted: rows, ..Counts::default() },
            parts: vec![part],
        });
    }
    if version != PAYLOAD_VERSION {
        return None;
    }
    let mut take_str = || -> Option<String> {
        let len = u16::from_le_bytes(payload.get(at..at + 2)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(payload.get(at + 2..at + 2 + len)?).ok()?.to_string();
        at += 2 + len;
        Some(s)
    };
    let table = TableName::parse(&take_str()?).ok()?;
    let key = take_str()?;
    let mut take = |n: usize| {
        let slice = payload.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let mut counts = [0usize; 3];
    for n in &mut counts {
        *n = u64_of(take(8)?)? as usize;
    }
    let parts_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let mut parts = Vec::with_capacity(parts_len);
    for _ in 0..parts_len {
        let len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
        let part_table = TableName::parse(std::str::from_utf8(take(len)?).ok()?).ok()?;
        let body = match take(1)?[0] {
            0 => None,
            code => Some(format_of(code)?),
        };
        let rows = u64_of(take(8)?)? as usize;
        let data_len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let data = Bytes::copy_from_slice(take(data_len)?);
        parts.push(WalPart { table: part_table, rows, data, batches: Vec::new(), body });
    }
    Some(WalRecord {
        seq,
        table,
        key: (!key.is_empty()).then_some(key),
        received_ms,
        counts: Counts { accepted: counts[0], rejected: counts[1], duplicates: counts[2] },
        parts,
    })
}

/// Reads a segment; returns its records with their frame sizes, and the length of its valid
/// prefix. A bad frame ends the newest segment (`last`); anywhere else it is an error.
fn read_segment(path: &Path, last: bool) -> Result<(Vec<(WalRecord, u64)>, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| WalError::Io { dir: path.display().to_string(), source })?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let frame = bytes.get(at..at + FRAME_HEADER).and_then(|header| {
            let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
            let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
            (crc32fast::hash(payload) == crc).then_some(payload)
        });
        match frame.and_then(decode) {
            Some(record) => {
                let size = FRAME_HEADER + record_payload_len(&bytes[at..]);
                records.push((record, size as u64));
                at += size;
            }
            None if last => break,
            None => {
                return Err(WalError::Corrupt(format!(
                    "bad record at byte {at} of {}; move the file away to start without it",
                    path.display()
                )))
            }
        }
    }
    Ok((records, at as u64))
}

fn record_payload_len(frame: &[u8]) -> usize {
    u32::from_le_bytes(frame[0..4].try_into().expect("checked header")) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<u64>>);
    impl WalSink for Collect {
        fn durable(&self, seq: u64, _: Vec<WalPart>) {
            self.0.lock().unwrap().push(seq);
        }
    }

    /// A record of one row `{"v": body}` for `table`.
    fn record(table: &str, body: &str, key: Option<&str>) -> WalRecord {
        use arrow::array::StringArray;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![body]))]).unwrap();
        let table = TableName::parse(table).unwrap();
        WalRecord {
            seq: 0,
            table: table.clone(),
            key: key.map(String::from),
            received_ms: 1_700_000_000_000,
            counts: Counts { accepted: 1, ..Counts::default() },
            parts: vec![WalPart::new(table, vec![batch]).unwrap()],
        }
    }

    fn config(dir: &Path) -> WalConfig {
        WalConfig { dir: dir.to_path_buf(), max_bytes: 1 << 20, segment_bytes: 200 }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_sequence_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        let Recovered { wal, records } = Wal::open(config(dir.path()), sink.clone()).unwrap();
        assert!(records.is_empty());
        let wal = Arc::new(wal);
        let appends = (0..50).map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move {
                wal.append(record("a", &format!("{{\"i\": {i}}}"), (i == 7).then_some("k7"))).await
            })
        });
        let mut seqs: Vec<u64> = futures::future::join_all(appends)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap())
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        assert_eq!(
            *sink.0.lock().unwrap(),
            (1..=50).collect::<Vec<_>>(),
            "the sink sees records in order"
        );
        drop(wal);

        // Reopen: every record is back, and numbering continues.
        let Recovered { wal, records } = Wal::open(config(dir.path()), sink.clone()).unwrap();
        assert_eq!(records.len(), 50);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
        assert_eq!(records.iter().filter(|r| r.key.as_deref() == Some("k7")).count(), 1);
        // The rows come back as they went in.
        let k7 = records.iter().find(|r| r.key.as_deref() == Some("k7")).unwrap();
        let mut part = k7.parts[0].clone();
        part.decode().unwrap();
        let value = arrow::util::pretty::pretty_format_batches(&part.batches).unwrap().to_string();
        assert!(value.contains(r#"{"i": 7}"#), "{value}");
        assert_eq!(k7.counts.accepted, 1);
        assert_eq!(wal.append(record("a", "{}", None)).await.unwrap(), 51);

        // Committing deletes sealed segments and hands over their keys; numbering survives.
        let keys = wal.committed(&TableName::parse("a").unwrap(), 51);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].key, "k7");
        drop(wal);
        let Recovered { wal, records } = Wal::open(config(dir.path()), sink).unwrap();
        assert!(records.iter().all(|r| r.seq > 45), "sealed segments are gone");
        assert_eq!(wal.append(record("a", "{}", None)).await.unwrap(), 52);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn torn_tail_is_cut_and_full_log_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        let wal =
            Wal::open(WalConfig { segment_bytes: 1 << 20, ..config(dir.path()) }, sink.clone())
                .unwrap()
                .wal;
        wal.append(record("a", "{\"x\": 1}", None)).await.unwrap();
        drop(wal);
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(&[42, 0, 0, 0, 1, 2]).unwrap();
        drop(file);
        let Recovered { wal, records } =
            Wal::open(WalConfig { max_bytes: 3000, ..config(dir.path()) }, sink).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(wal.append(record("a", "{}", None)).await.unwrap(), 2);
        match wal.append(record("a", &"x".repeat(4000), None)).await {
            Err(WalError::Full { limit: 3000, .. }) => {}
            other => panic!("expected Full, got {other:?}"),
        }
    }

    #[test]
    fn a_second_process_cannot_share_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Collect::default());
        let first = Wal::open(config(dir.path()), sink.clone()).unwrap();
        assert!(matches!(Wal::open(config(dir.path()), sink), Err(WalError::Locked(_))));
        drop(first);
    }
}
