//! Property tests of the record frame: what is written reads back the same, and damage at the
//! end of a segment, or anywhere in a sealed one, is found, never read as a record.
//!
//! `PROPTEST_CASES` raises the number of cases (256 by default).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use tarn_catalog::TableName;

use crate::wal::codec;
use crate::wal::segment;
use crate::wal::{Counts, WalError, WalPart, WalRecord};
use crate::Format;

fn table_name() -> impl Strategy<Value = TableName> {
    ("[a-z][a-z0-9_]{0,12}", proptest::option::of("[a-z][a-z0-9_]{0,12}")).prop_map(
        |(name, namespace)| match namespace {
            Some(ns) => TableName::new(&ns, &name).unwrap(),
            None => TableName::parse(&name).unwrap(),
        },
    )
}

/// Rows as an Arrow IPC stream, or a request body, for a table.
fn part() -> impl Strategy<Value = WalPart> {
    let rows = proptest::collection::vec((proptest::option::of(any::<i64>()), "\\PC{0,12}"), 0..6);
    let format = prop_oneof![Just(Format::Json), Just(Format::Ndjson), Just(Format::Csv)];
    let body = (format, proptest::collection::vec(any::<u8>(), 0..200), 0..10usize);
    (table_name(), prop_oneof![rows.prop_map(Ok), body.prop_map(Err)]).prop_map(|(table, data)| {
        match data {
            Ok(rows) => {
                let schema = Arc::new(Schema::new(vec![
                    Field::new("n", DataType::Int64, true),
                    Field::new("s", DataType::Utf8, false),
                ]));
                let n: Int64Array = rows.iter().map(|(n, _)| *n).collect();
                let s: StringArray = rows.iter().map(|(_, s)| Some(s.as_str())).collect();
                let batch = RecordBatch::try_new(schema, vec![Arc::new(n), Arc::new(s)]).unwrap();
                WalPart::new(table, vec![batch]).unwrap()
            }
            Err((format, body, rows)) => {
                WalPart { rows, ..WalPart::body(table, format, Bytes::from(body), vec![]) }
            }
        }
    })
}

fn record() -> impl Strategy<Value = WalRecord> {
    (
        any::<u64>(),
        table_name(),
        proptest::option::of("[!-~]{1,255}"),
        any::<i64>(),
        any::<(usize, usize, usize)>(),
        proptest::collection::vec(part(), 0..4),
    )
        .prop_map(|(seq, table, key, received_ms, (accepted, rejected, duplicates), parts)| {
            WalRecord {
                seq,
                table,
                key,
                received_ms,
                counts: Counts { accepted, rejected, duplicates },
                parts,
            }
        })
}

/// Records with growing sequence numbers, as in a segment.
fn records() -> impl Strategy<Value = Vec<WalRecord>> {
    proptest::collection::vec(record(), 2..6).prop_map(|mut records| {
        for (i, record) in records.iter_mut().enumerate() {
            record.seq = i as u64 * 3 + 1;
        }
        records
    })
}

/// Checks that `read` is `written` (rows decoded back, for Arrow parts).
fn assert_same(read: &WalRecord, written: &WalRecord) {
    assert_eq!(read.seq, written.seq);
    assert_eq!(read.table, written.table);
    assert_eq!(read.key, written.key);
    assert_eq!(read.received_ms, written.received_ms);
    assert_eq!(read.counts, written.counts);
    assert_eq!(read.parts.len(), written.parts.len());
    for (read, written) in read.parts.iter().zip(&written.parts) {
        assert_eq!(read.table, written.table);
        assert_eq!(read.rows, written.rows);
        assert_eq!(read.body, written.body);
        assert_eq!(read.data, written.data);
        let mut decoded = read.clone();
        decoded.decode().unwrap();
        if read.body.is_none() {
            assert_eq!(decoded.batches, written.batches);
        }
    }
}

/// The segment's bytes, and where each frame ends.
fn segment_of(records: &[WalRecord]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for record in records {
        codec::encode(&mut bytes, record);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn read(bytes: &[u8], newest: bool) -> Result<segment::ReadBack, WalError> {
    segment::check(Path::new("wal-00000000000000000001.log"), bytes, newest)
}

/// Checks that the newest segment reads back as the first `n` records, with the valid prefix
/// where they end; and that a sealed one is reported as damaged.
fn assert_prefix(bytes: &[u8], records: &[WalRecord], ends: &[usize], n: usize) {
    let got = read(bytes, true).expect("the newest segment reads");
    assert_eq!(got.records.len(), n, "exactly the records before the damage");
    for ((record, frame), written) in got.records.iter().zip(records) {
        assert_same(record, written);
        assert!(*frame > 0);
    }
    let valid = if n == 0 { 0 } else { ends[n - 1] };
    assert_eq!(got.valid_len, valid as u64, "the valid prefix");
    assert!(matches!(read(bytes, false), Err(WalError::Corrupt(_))), "damage in a sealed segment");
}

proptest! {
    #[test]
    fn prop_a_record_reads_back_as_written(record in record()) {
        let mut bytes = Vec::new();
        let len = codec::encode(&mut bytes, &record);
        prop_assert_eq!(len as usize, bytes.len());
        let got = read(&bytes, false).unwrap();
        prop_assert_eq!(got.records.len(), 1);
        prop_assert_eq!(got.valid_len, len);
        assert_same(&got.records[0].0, &record);
    }

    #[test]
    fn prop_a_version_1_record_reads_back(record in record(), format in 1..=3u8, body in proptest::collection::vec(any::<u8>(), 0..100)) {
        let format = [Format::Json, Format::Ndjson, Format::Csv][format as usize - 1];
        let rows = record.counts.accepted;
        let part = WalPart { rows, ..WalPart::body(record.table.clone(), format, Bytes::from(body), vec![]) };
        let record = WalRecord { counts: Counts { accepted: rows, ..Counts::default() }, parts: vec![part], ..record };
        let mut bytes = Vec::new();
        codec::encode_v1(&mut bytes, &record);
        let got = read(&bytes, false).unwrap();
        prop_assert_eq!(got.records.len(), 1);
        assert_same(&got.records[0].0, &record);
    }

    #[test]
    fn prop_a_torn_tail_leaves_exactly_the_records_before_it(records in records(), at in any::<Index>()) {
        let (bytes, ends) = segment_of(&records);
        // Cut anywhere in the last record (header included), short of its end.
        let last_start = ends[ends.len() - 2];
        let cut = last_start + 1 + at.index(bytes.len() - last_start - 1);
        assert_prefix(&bytes[..cut], &records, &ends, records.len() - 1);
        prop_assert_eq!(read(&bytes[..cut], true).unwrap().after_tear, 0);
    }

    #[test]
    fn prop_any_truncation_reads_as_the_whole_records_before_it(records in records(), at in any::<Index>()) {
        let (bytes, ends) = segment_of(&records);
        let cut = at.index(bytes.len() + 1);
        let whole = ends.iter().take_while(|end| **end <= cut).count();
        if ends.contains(&cut) || cut == 0 {
            // Whole records gone: a shorter segment, as sound as any.
            prop_assert_eq!(read(&bytes[..cut], false).unwrap().records.len(), whole);
        } else {
            assert_prefix(&bytes[..cut], &records, &ends, whole);
        }
    }

    #[test]
    fn prop_a_bit_flip_in_the_last_record_is_detected(records in records(), at in any::<Index>(), bit in 0..8u8) {
        let (mut bytes, ends) = segment_of(&records);
        let last_start = ends[ends.len() - 2];
        let flip = last_start + at.index(bytes.len() - last_start);
        bytes[flip] ^= 1 << bit;
        assert_prefix(&bytes, &records, &ends, records.len() - 1);
        prop_assert_eq!(read(&bytes, true).unwrap().after_tear, 0, "nothing follows the tear");
    }

    #[test]
    fn prop_a_bit_flip_in_an_earlier_record_is_never_accepted(records in records(), at in any::<Index>(), bit in 0..8u8) {
        let (mut bytes, ends) = segment_of(&records);
        let last_start = ends[ends.len() - 2];
        let flip = at.index(last_start);
        bytes[flip] ^= 1 << bit;
        let damaged = ends.iter().take_while(|end| **end <= flip).count();
        // A sealed segment is reported as damaged.
        let sealed = read(&bytes, false);
        prop_assert!(matches!(sealed, Err(WalError::Corrupt(_))), "{:?}", sealed.map(|r| r.records.len()));
        // The newest stops before the damaged record: what it reads is unchanged, and the
        // sound records after it are counted (their bytes are kept when the segment is cut).
        assert_prefix(&bytes, &records, &ends, damaged);
        prop_assert_eq!(read(&bytes, true).unwrap().after_tear, records.len() - damaged - 1);
    }
}
