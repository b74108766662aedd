//! What the log stores: one [`WalRecord`] per request, its [`WalPart`]s, the [`Counts`] the
//! request was answered with, and the [`KeyRecord`] its idempotency key leaves behind.
//!
//! These are plain data, shared by the log and by the idempotency key store (which depends on
//! the log, never the other way round).

use arrow::array::RecordBatch;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tarn_catalog::TableName;

use crate::Format;

/// How many records a request accepted, rejected (to `<table>_rejected`) and left out as
/// duplicates of its table's unique key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// An idempotency key as it outlives its record: what the first request with that key was
/// told. The log hands these over when it deletes the segment that held the record; the key
/// store keeps them (one JSON line each in `keys.log`).
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
