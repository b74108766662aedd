//! Streaming a query's result to the client: encoded batch by batch with bounded buffering,
//! cut at the row cap (saying so) and at the time limit.

use axum::body::{Body, Bytes};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tarn_query::observe::{Outcome, QueryRecord};
use tarn_query::{BatchEncoder, Error, Trailer};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tracing::Instrument;

/// Encoded chunks buffered between the query and a slow client; the query pauses when full.
const STREAM_BUFFER_CHUNKS: usize = 2;

/// What bounds a streamed answer.
pub(crate) struct Limits {
    /// Rows after which the answer is cut (and says so).
    pub max_rows: Option<u64>,
    /// When the query's time is up, and its limit (for the message).
    pub deadline: Option<(Instant, std::time::Duration)>,
    /// The next page's token, for the JSON trailer.
    pub next_page: Option<String>,
}

/// Streams the encoded result with bounded buffering. An error after the answer started
/// (including the time limit) aborts the body, so the client sees a failed transfer rather
/// than a silently short result. The execution slot (`permit`) is held until the end, or until
/// the time limit, also while a client that stopped reading keeps the buffer full. A query's
/// `record` is finished with how the stream ended.
pub(crate) fn stream_body(
    stream: SendableRecordBatchStream,
    first: Option<arrow::array::RecordBatch>,
    encoder: Box<dyn BatchEncoder>,
    limits: Limits,
    permit: Option<OwnedSemaphorePermit>,
    mut record: Option<QueryRecord>,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_BUFFER_CHUNKS);
    let deadline = limits.deadline;
    let on_timeout = tx.clone();
    let task = async move {
        let produce =
            produce(stream, first, encoder, limits.max_rows, limits.next_page, tx, &mut record);
        let Some((deadline, limit)) = deadline else {
            let outcome = produce.await;
            drop(permit);
            if let Some(record) = record {
                record.finish(outcome);
            }
            return;
        };
        let outcome = tokio::time::timeout_at(deadline, produce).await.ok();
        // The query (dropped with `produce`) and its slot are released now; after a timeout
        // the error follows the buffered chunks when (if) the client reads on.
        drop(permit);
        if let Some(record) = record {
            record.finish(outcome.unwrap_or(Outcome::TimedOut));
        }
        if outcome.is_none() {
            let message = Error::Timeout(limit).to_string();
            tracing::warn!("{message}");
            let _ = on_timeout.send(Err(std::io::Error::other(message))).await;
        }
    };
    // In the request's span: the query's log lines carry its request id and key.
    tokio::spawn(task.instrument(tracing::Span::current()));
    // Fused: a body may be polled again after its end (the gzip encoder does), which an
    // unfused `unfold` answers with a panic.
    Body::from_stream(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
            .fuse(),
    )
}

/// Encodes the result into `tx`: the first batch (already pulled), then the rest of the
/// stream, cut at `max_rows` (and saying so), then the end; counts the rows into `record`
/// and answers how it ended.
async fn produce(
    mut stream: SendableRecordBatchStream,
    first: Option<arrow::array::RecordBatch>,
    mut encoder: Box<dyn BatchEncoder>,
    max_rows: Option<u64>,
    next_page: Option<String>,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    record: &mut Option<QueryRecord>,
) -> Outcome {
    let schema = stream.schema();
    let mut pending = first.map(Ok);
    let mut chunk = encoder.begin(&schema);
    let mut sent_rows = 0u64;
    let mut trailer = Trailer { truncated: false, next_page_token: next_page };
    let fail = |message: String| std::io::Error::other(message);
    loop {
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "encoding a query result failed");
                let _ = tx.send(Err(fail(e.to_string()))).await;
                return Outcome::Failed;
            }
        };
        if !bytes.is_empty() && tx.send(Ok(Bytes::from(bytes))).await.is_err() {
            return Outcome::Cancelled; // the client went away; dropping the stream cancels the query
        }
        let next = match pending.take() {
            Some(batch) => Some(batch),
            None => stream.next().await,
        };
        chunk = match next {
            Some(Ok(mut batch)) => {
                if let Some(cap) = max_rows {
                    let room = cap - sent_rows;
                    if batch.num_rows() as u64 > room {
                        batch = batch.slice(0, room as usize);
                        trailer.truncated = true;
                    }
                }
                sent_rows += batch.num_rows() as u64;
                if let Some(record) = record.as_mut() {
                    record.rows(batch.num_rows() as u64);
                }
                let encoded = encoder.batch(&batch);
                if trailer.truncated {
                    // Cut: this batch, then the end.
                    match encoded {
                        Ok(mut bytes) => match encoder.finish(&trailer) {
                            Ok(end) => {
                                bytes.extend(end);
                                let _ = tx.send(Ok(Bytes::from(bytes))).await;
                                return Outcome::Succeeded;
                            }
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                } else {
                    encoded
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "query failed while streaming its result");
                let _ = tx.send(Err(fail(e.to_string()))).await;
                return Outcome::Failed;
            }
            None => {
                let last = encoder.finish(&trailer).map(Bytes::from).map_err(|e| {
                    tracing::warn!(error = %e, "encoding a query result failed");
                    fail(e.to_string())
                });
                let outcome = if last.is_ok() { Outcome::Succeeded } else { Outcome::Failed };
                let _ = tx.send(last).await;
                return outcome;
            }
        };
    }
}
