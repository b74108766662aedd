//! Tests of the write-ahead log. Shared helpers here; the fail-closed test on a real full
//! disk in `fail_closed.rs`, property tests of the frame format in `props.rs`.

mod fail_closed;
mod props;
pub(crate) mod tmpfs;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use tarn_catalog::TableName;
use tarn_lake::{Classify, ErrorKind};

use super::*;

/// Collects the sequence numbers the log hands over as durable.
#[derive(Default)]
pub(super) struct Collect(pub Mutex<Vec<u64>>);
impl WalSink for Collect {
    fn durable(&self, seq: u64, _: Vec<WalPart>) {
        self.0.lock().unwrap().push(seq);
    }
}

/// A record of one row `{"v": body}` for `table`.
pub(super) fn record(table: &str, body: &str, key: Option<&str>) -> WalRecord {
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

/// The value of the one row of a record made by [`record`].
pub(super) fn value_of(record: &WalRecord) -> String {
    use arrow::array::{Array, AsArray};
    let mut part = record.parts[0].clone();
    part.decode().unwrap();
    let column = part.batches[0].column(0).as_string::<i32>().clone();
    assert_eq!(column.len(), 1);
    column.value(0).to_string()
}

pub(super) fn config(dir: &Path) -> WalConfig {
    WalConfig { dir: dir.to_path_buf(), max_bytes: 1 << 20, segment_bytes: 200, retry_ms: 1000 }
}

/// Calls [`Wal::committed`]; returns the keys handed over.
fn commit(wal: &Wal, table: &str, seq: u64) -> Vec<KeyRecord> {
    let mut moved = Vec::new();
    wal.committed(&TableName::parse(table).unwrap(), seq, |keys| {
        moved.extend_from_slice(keys);
        Ok(())
    })
    .unwrap();
    moved
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    segment::list(dir).unwrap().into_iter().map(|(_, path)| path).collect()
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
    let mut seqs: Vec<u64> =
        futures::future::join_all(appends).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
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
    assert_eq!(value_of(k7), r#"{"i": 7}"#);
    assert_eq!(k7.counts.accepted, 1);
    assert_eq!(wal.append(record("a", "{}", None)).await.unwrap(), 51);

    // Committing deletes sealed segments and hands over their keys; numbering survives.
    let keys = commit(&wal, "a", 51);
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
    let wal = Wal::open(WalConfig { segment_bytes: 1 << 20, ..config(dir.path()) }, sink.clone())
        .unwrap()
        .wal;
    wal.append(record("a", "{\"x\": 1}", None)).await.unwrap();
    drop(wal);
    let segment = segments(dir.path()).pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[42, 0, 0, 0, 1, 2]).unwrap();
    drop(file);
    let Recovered { wal, records } =
        Wal::open(WalConfig { max_bytes: 3000, ..config(dir.path()) }, sink).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(wal.append(record("a", "{}", None)).await.unwrap(), 2);
    // Full for now (the lake has not committed what is logged): retry later.
    let mut appended = 0;
    let full = loop {
        match wal.append(record("a", &"x".repeat(500), None)).await {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(full, WalError::Full { limit: 3000, .. }), "{full:?}");
    assert!(appended >= 1, "records fit until the log is full");
    assert_eq!(full.kind(), ErrorKind::Unavailable);
    // Larger than the whole log: retrying can never help, so it is not "full" (503) but 413.
    let too_large = wal.append(record("a", &"x".repeat(4000), None)).await.unwrap_err();
    assert!(matches!(too_large, WalError::TooLarge(_)), "{too_large:?}");
    assert!(too_large.to_string().contains("at most 3000"), "{too_large}");
    assert_eq!(too_large.kind(), ErrorKind::TooLarge);
}

/// Found in review: a bad record inside the newest segment cut off the sound records after
/// it without a trace. The cut stays (a torn group write looks the same), but the bytes are
/// kept beside the log and the start says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_after_a_bad_one_in_the_newest_segment_are_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Collect::default());
    let config = WalConfig { segment_bytes: 1 << 20, ..config(dir.path()) };
    let wal = Wal::open(config.clone(), sink.clone()).unwrap().wal;
    for body in ["first", "second", "third"] {
        wal.append(record("a", body, None)).await.unwrap();
    }
    drop(wal);
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let first_len = codec::scan(&bytes).records[0].1 as usize;
    // A flipped bit in the second record's payload.
    bytes[first_len + codec::FRAME_HEADER + 3] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    let Recovered { records, .. } = Wal::open(config, sink).unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    let kept = std::path::PathBuf::from(format!("{}.cut-at-{first_len}", segment.display()));
    assert_eq!(std::fs::read(&kept).unwrap(), bytes[first_len..], "the cut-off bytes are kept");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), first_len as u64);
    assert_eq!(segments(dir.path()), vec![segment], "the kept bytes are not a segment");
}

#[test]
fn a_second_process_cannot_share_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Collect::default());
    let first = Wal::open(config(dir.path()), sink.clone()).unwrap();
    assert!(matches!(Wal::open(config(dir.path()), sink), Err(WalError::Locked(_))));
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_deleted_only_after_its_keys_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Collect::default());
    let wal = Wal::open(config(dir.path()), sink).unwrap().wal;
    for i in 0..10 {
        wal.append(record("a", &"x".repeat(100), Some(&format!("k{i}")))).await.unwrap();
    }
    let before = segments(dir.path());
    assert!(before.len() > 2, "{before:?}");
    let table = TableName::parse("a").unwrap();
    let refused = wal.committed(&table, 10, |_| Err(std::io::Error::other("disk full")));
    assert!(refused.is_err());
    assert_eq!(segments(dir.path()), before, "no segment goes while its keys are not kept");
    let keys = commit(&wal, "a", 10);
    // The writer seals a segment just after acknowledging its record, so the newest record
    // may still be in the active segment.
    // It creates the next segment's file before it takes the state's lock to make it the
    // active one: a file more than the state says may be on disk for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (files, live) = {
            let state = wal.state.lock().unwrap();
            let kept: usize =
                state.sealed.iter().chain([&state.active]).map(|s| s.keys.len()).sum();
            assert_eq!(keys.len() + kept, 10, "every key is handed over or still in a segment");
            assert!(keys.len() >= 9, "{keys:?}");
            (segments(dir.path()).len(), state.sealed.len() + 1)
        };
        if files == live {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the others are deleted: {files} files, {live} segments"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[test]
fn version_1_records_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let table = TableName::parse("legacy").unwrap();
    let body = bytes::Bytes::from_static(b"{\"a\": 1}\n{\"a\": 2}\n");
    let part =
        WalPart { rows: 2, ..WalPart::body(table.clone(), crate::Format::Ndjson, body, vec![]) };
    let old = WalRecord {
        seq: 7,
        table,
        key: Some("retry-1".into()),
        received_ms: 1_600_000_000_000,
        counts: Counts { accepted: 2, ..Counts::default() },
        parts: vec![part],
    };
    let mut bytes = Vec::new();
    codec::encode_v1(&mut bytes, &old);
    std::fs::write(segment::segment_path(dir.path(), 7), &bytes).unwrap();
    let Recovered { records, .. } =
        Wal::open(config(dir.path()), Arc::new(Collect::default())).unwrap();
    assert_eq!(records.len(), 1);
    let read = &records[0];
    assert_eq!((read.seq, read.key.as_deref(), read.counts.accepted), (7, Some("retry-1"), 2));
    assert_eq!(read.parts[0].body, Some(crate::Format::Ndjson));
    assert_eq!(read.parts[0].data, old.parts[0].data);
}

#[test]
fn the_node_id_is_made_once_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let id = node_id(dir.path()).unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(node_id(dir.path()).unwrap(), id, "the same id after a restart");
    assert_eq!(std::fs::read_to_string(dir.path().join("node-id")).unwrap(), id);
    std::fs::write(dir.path().join("node-id"), "given-by-ops_1\n").unwrap();
    assert_eq!(node_id(dir.path()).unwrap(), "given-by-ops_1");
}

/// Found in review: a node id lost while the log held records was replaced by a new one, so
/// every record looked uncommitted and replay wrote its rows to the lake again.
#[test]
fn a_lost_node_id_beside_logged_records_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    node_id(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("node-id")).unwrap();
    // An empty segment (a clean start's) holds nothing to replay: a new id is fine.
    std::fs::write(segment::segment_path(dir.path(), 1), b"").unwrap();
    node_id(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("node-id")).unwrap();
    std::fs::write(segment::segment_path(dir.path(), 1), b"a record").unwrap();
    let error = node_id(dir.path()).unwrap_err();
    assert!(matches!(error, WalError::NodeId { .. }), "{error:?}");
    assert!(error.to_string().contains("the log holds records"), "{error}");
    assert!(!dir.path().join("node-id").exists(), "no new id is written");
}

#[test]
fn a_bad_node_id_stops_the_start() {
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty", b"", "it is empty"),
        ("blank", b"  \n", "it is empty"),
        ("garbage", b"not an id at all", "not an id"),
        ("binary", &[0xff, 0xfe, 0x00], "not text"),
    ];
    for (name, content, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-id");
        std::fs::write(&path, content).unwrap();
        let error = node_id(dir.path()).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, WalError::NodeId { .. }), "{name}: {error:?}");
        assert!(text.contains(&path.display().to_string()), "{name}: names the file: {text}");
        assert!(text.contains(says), "{name}: says what is wrong: {text}");
        assert!(text.contains("restore the file"), "{name}: says what to do: {text}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "{name}: the file is left alone");
    }
    // Unreadable: a directory where the file should be.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("node-id")).unwrap();
    let text = node_id(dir.path()).unwrap_err().to_string();
    assert!(text.contains("cannot be read"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_frame_cannot_hold_is_refused_not_written_corrupt() {
    // The key's length is a u16 in the frame: a longer key used to be cut to its low 16 bits,
    // leaving a frame with a good CRC that does not decode (a sealed segment holding it
    // stopped the next start).
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Collect::default());
    let wal = Wal::open(config(dir.path()), sink.clone()).unwrap().wal;
    let long = "k".repeat(70_000);
    let error = wal.append(record("a", "x", Some(&long))).await.unwrap_err();
    assert!(matches!(error, WalError::TooLarge(_)), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::TooLarge);
    assert!(error.to_string().contains("Idempotency-Key is 70000 bytes long"), "{error}");
    assert_eq!(wal.append(record("a", "y", Some("short"))).await.unwrap(), 1);
    drop(wal);
    let Recovered { records, .. } = Wal::open(config(dir.path()), sink).unwrap();
    assert_eq!(records.iter().map(value_of).collect::<Vec<_>>(), ["y"]);
}
