//! The record frame: encoding a [`WalRecord`] for disk and reading frames back. Pure
//! functions over bytes; files are `segment.rs`'s business.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload`, payload: `2u8 | seq: u64 |
//! received_ms: i64 | table: str | key: str | accepted: u64 | rejected: u64 | duplicates: u64 |
//! parts: u16 | (table: str | kind: u8 | rows: u64 | len: u32 | data)*`, where `str` is a u16
//! length and UTF-8, and `data` an Arrow IPC stream (kind 0) or a request body (1 JSON,
//! 2 NDJSON, 3 CSV) for tables without a contract. An empty key is no key.
//!
//! Version 1 payloads (Tarn 0.1: the request body itself) are still read: `1u8 | seq: u64 |
//! received_ms: i64 | format: u8 | rows: u64 | table: str | key: str | body` (the body runs to
//! the end of the payload).
//!
//! A frame is accepted only when its length fits the bytes at hand, its CRC matches and its
//! payload decodes exactly (no byte left over); [`scan`] stops at the first frame that is not.

use bytes::Bytes;
use tarn_catalog::TableName;

use super::record::{Counts, WalPart, WalRecord};
use crate::Format;

/// Bytes before the payload: length and CRC.
pub(super) const FRAME_HEADER: usize = 8;
/// The payload version written.
const PAYLOAD_VERSION: u8 = 2;
/// Records of Tarn 0.1 hold the request body; they are read, never written.
const LEGACY_PAYLOAD_VERSION: u8 = 1;

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

/// Says why `record` does not fit the frame (a length field would overflow), if it does not.
pub(super) fn check(record: &WalRecord) -> Result<(), String> {
    let too_long = |what: &str, len: usize, max: usize| {
        (len > max).then(|| format!("{what} is {len} bytes long, the most the log holds is {max}"))
    };
    let max_str = u16::MAX as usize;
    let mut problems = vec![
        too_long("the Idempotency-Key", record.key.as_ref().map_or(0, String::len), max_str),
        too_long("the table name", record.table.to_string().len(), max_str),
        too_long("the list of parts", record.parts.len(), u16::MAX as usize),
    ];
    for part in &record.parts {
        problems.push(too_long("a part's data", part.data.len(), u32::MAX as usize));
    }
    match problems.into_iter().flatten().next() {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends the record's frame to `out`; returns the frame's length. The record must pass
/// [`check`].
pub(super) fn encode(out: &mut Vec<u8>, record: &WalRecord) -> u64 {
    debug_assert!(check(record).is_ok(), "{:?}", check(record));
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
    seal(out, start)
}

/// Writes the length and CRC of the payload after `start + FRAME_HEADER` into the header.
fn seal(out: &mut [u8], start: usize) -> u64 {
    let payload = &out[start + FRAME_HEADER..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (out.len() - start) as u64
}

/// Appends a version 1 frame (as Tarn 0.1 wrote them) of a record with one body part.
#[cfg(test)]
pub(super) fn encode_v1(out: &mut Vec<u8>, record: &WalRecord) -> u64 {
    let part = &record.parts[0];
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(LEGACY_PAYLOAD_VERSION);
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.received_ms.to_le_bytes());
    out.push(format_code(part.body.expect("version 1 records hold a body")));
    out.extend_from_slice(&(part.rows as u64).to_le_bytes());
    put_str(out, &record.table.to_string());
    put_str(out, record.key.as_deref().unwrap_or(""));
    out.extend_from_slice(&part.data);
    seal(out, start)
}

/// Reads a payload front to back.
struct Reader<'a> {
    payload: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.payload.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(slice)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).ok()
    }
    fn table(&mut self) -> Option<TableName> {
        TableName::parse_stored(self.str()?).ok()
    }
    fn key(&mut self) -> Option<Option<String>> {
        let key = self.str()?;
        Some((!key.is_empty()).then(|| key.to_string()))
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.payload[self.at..];
        self.at = self.payload.len();
        rest
    }
    fn done(&self) -> bool {
        self.at == self.payload.len()
    }
}

/// Decodes a payload (without its frame header); `None` when it is not a whole record.
pub(super) fn decode(payload: &[u8]) -> Option<WalRecord> {
    let mut r = Reader { payload, at: 0 };
    let version = r.u8()?;
    let seq = r.u64()?;
    let received_ms = r.u64()? as i64;
    if version == LEGACY_PAYLOAD_VERSION {
        let format = format_of(r.u8()?)?;
        let rows = r.u64()? as usize;
        let table = r.table()?;
        let key = r.key()?;
        let body = Bytes::copy_from_slice(r.rest());
        let part = WalPart::body(table.clone(), format, body, Vec::new());
        let part = WalPart { rows, ..part };
        let counts = Counts { accepted: rows, ..Counts::default() };
        return Some(WalRecord { seq, table, key, received_ms, counts, parts: vec![part] });
    }
    if version != PAYLOAD_VERSION {
        return None;
    }
    let table = r.table()?;
    let key = r.key()?;
    let counts = Counts {
        accepted: r.u64()? as usize,
        rejected: r.u64()? as usize,
        duplicates: r.u64()? as usize,
    };
    let parts_len = r.u16()? as usize;
    let mut parts = Vec::with_capacity(parts_len);
    for _ in 0..parts_len {
        let table = r.table()?;
        let body = match r.u8()? {
            0 => None,
            code => Some(format_of(code)?),
        };
        let rows = r.u64()? as usize;
        let data_len = r.u32()? as usize;
        let data = Bytes::copy_from_slice(r.take(data_len)?);
        parts.push(WalPart { table, rows, data, batches: Vec::new(), body });
    }
    r.done().then_some(WalRecord { seq, table, key, received_ms, counts, parts })
}

/// The frames at the start of `bytes` that are whole and sound.
#[derive(Debug)]
pub(super) struct Scan {
    /// The records, each with the length of its frame.
    pub records: Vec<(WalRecord, u64)>,
    /// Length of the prefix they fill: where the first bad or partial frame starts, or the
    /// length of `bytes` when there is none.
    pub valid_len: u64,
}

/// Reads frames from the start of `bytes` until the end or the first frame that is partial,
/// fails its CRC, or does not decode.
pub(super) fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(frame) = frame_at(bytes, at) {
        let Some(record) = frame.record() else { break };
        records.push((record, frame.size() as u64));
        at += frame.size();
    }
    Scan { records, valid_len: at as u64 }
}

/// How many sound frames stand in `bytes` after `from` (where [`scan`] stopped), numbered
/// above `after_seq`: frames after a bad one mean the bad one is not simply the end of a torn
/// write, or that a torn write left some of its frames whole. Candidates are checked cheaply
/// (payload version, a sequence number within 2^32 above `after_seq`) before their CRC, so
/// this stays linear in the bytes.
pub(super) fn frames_after(bytes: &[u8], from: usize, after_seq: u64) -> usize {
    let plausible = |payload: &[u8]| {
        let Some(seq) = payload.get(1..9) else { return false };
        let seq = u64::from_le_bytes(seq.try_into().expect("8 bytes"));
        matches!(payload[0], PAYLOAD_VERSION | LEGACY_PAYLOAD_VERSION)
            && seq > after_seq
            && seq - after_seq <= 1 << 32
    };
    let mut found = 0;
    let mut at = from + 1;
    while at + FRAME_HEADER < bytes.len() {
        match frame_at(bytes, at) {
            Some(frame) if plausible(frame.payload) && frame.record().is_some() => {
                found += 1;
                at += frame.size();
            }
            _ => at += 1,
        }
    }
    found
}

/// A frame whose header and payload fit in the bytes at hand; not checked yet.
struct Frame<'a> {
    crc: u32,
    payload: &'a [u8],
}

impl Frame<'_> {
    fn size(&self) -> usize {
        FRAME_HEADER + self.payload.len()
    }

    /// Its record, when its CRC matches and its payload decodes exactly.
    fn record(&self) -> Option<WalRecord> {
        (crc32fast::hash(self.payload) == self.crc).then(|| decode(self.payload)).flatten()
    }
}

/// The frame whose header starts at `at`, if it fits in `bytes`.
fn frame_at(bytes: &[u8], at: usize) -> Option<Frame<'_>> {
    let header = bytes.get(at..at + FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let payload = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len)?;
    Some(Frame { crc, payload })
}
