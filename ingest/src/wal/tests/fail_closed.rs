//! The log on a disk that really runs full (a small tmpfs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tarn_lake::{Classify, ErrorKind};

use super::tmpfs::Tmpfs;
use super::{record, value_of, Collect};
use crate::wal::{Recovered, Wal, WalConfig, WalError};

/// Appends until the log takes a record again (it may refuse for up to `retry_ms`).
async fn append_once_possible(wal: &Wal, body: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match wal.append(record("a", body, None)).await {
            Ok(seq) => return seq,
            Err(e) if e.kind() == ErrorKind::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("the log does not take records again: {e}"),
        }
    }
}

/// Expects the answer to an append on the full disk: refused, retryable (503 with
/// `Retry-After`), and saying why.
fn assert_refused(result: Result<u64, WalError>, what: &str) -> WalError {
    let error = match result {
        Ok(seq) => panic!("{what}: the disk is full, yet record {seq} was acknowledged"),
        Err(e) => e,
    };
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{what}: {error}");
    assert!(error.retry_after().is_some(), "{what}: a Retry-After: {error}");
    assert!(error.to_string().contains("No space left on device"), "{what}: {error}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_fails_closed_when_the_disk_is_full() {
    let disk = Tmpfs::mount(512);
    let config = WalConfig {
        dir: disk.path().join("wal"),
        max_bytes: 64 << 20,
        segment_bytes: 64 << 20,
        retry_ms: 2000,
    };
    let sink = Arc::new(Collect::default());
    let wal = Wal::open(config.clone(), sink.clone()).unwrap().wal;
    let mut acked = Vec::new();
    for i in 0..3 {
        let body = format!("before-{i}");
        acked.push((wal.append(record("a", &body, None)).await.unwrap(), body));
    }

    // The disk runs full. The group whose write fails gets the write's error (larger than a
    // page, so part of it may land in the segment's last page before the write fails)...
    let filler = disk.fill();
    let big = "f".repeat(16 * 1024);
    let failed = wal.append(record("a", &format!("failed-0 {big}"), None)).await;
    let error = assert_refused(failed, "the failing group");
    assert!(matches!(error, WalError::Io { .. }), "{error:?}");
    // ... and later appends are refused at once, without a number, until the log tries again.
    let refused = wal.append(record("a", "failed-1", None)).await;
    let error = assert_refused(refused, "an append after the failure");
    assert!(matches!(error, WalError::Failing { .. }), "{error:?}");

    // A restart on the full disk reads back exactly what was acknowledged.
    drop(wal);
    let Recovered { wal, records } = Wal::open(config.clone(), sink.clone()).unwrap();
    let read: Vec<(u64, String)> = records.iter().map(|r| (r.seq, value_of(r))).collect();
    assert_eq!(read, acked, "after a restart on the full disk");
    let failed = wal.append(record("a", &format!("failed-2 {big}"), None)).await;
    assert!(matches!(assert_refused(failed, "after the restart"), WalError::Io { .. }));

    // Space is back: appends succeed again (after at most `retry_ms`).
    disk.free(&filler);
    for i in 0..3 {
        let body = format!("after-{i}");
        acked.push((append_once_possible(&wal, &body).await, body));
    }

    let seqs: Vec<u64> = acked.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequence numbers only grow: {seqs:?}");
    assert!(
        seqs[3] >= seqs[2] + 3,
        "the numbers of the two failed writes are never given again: {seqs:?}"
    );
    assert_eq!(*sink.0.lock().unwrap(), seqs, "only acknowledged records reach the sink");

    // After reopening: exactly the acknowledged records, none of the failed ones.
    drop(wal);
    let Recovered { wal, records } = Wal::open(config, sink).unwrap();
    let read: Vec<(u64, String)> = records.iter().map(|r| (r.seq, value_of(r))).collect();
    assert_eq!(read, acked, "after a restart");
    let next = wal.append(record("a", "last", None)).await.unwrap();
    assert!(next > *seqs.last().unwrap());
}
