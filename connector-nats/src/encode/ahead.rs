//! The query's batches, encoded ahead of delivery.
//!
//! A task pulls each batch from the query and encodes it on a blocking thread while the
//! previous one is published, so the encoding runs on another core (measurements in
//! `benches/README.md`). The task reserves room in a channel of one before it pulls the
//! next batch: besides the batch being delivered, at most one more is pulled and encoded,
//! so memory stays bounded. The stream ends only when the query does; a failure (or a
//! panic in the query or the encoder) arrives as an error after the batches before it.

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::encode::{EncodedBatch, RowEncoder};
use crate::lineage::OutputProgress;
use crate::metrics::SinkMetrics;

/// The encoded batches of one statement, in query order.
pub(crate) struct EncodedBatches {
    rx: mpsc::Receiver<Result<EncodedBatch>>,
    task: Option<JoinHandle<()>>,
}

impl EncodedBatches {
    /// Starts pulling and encoding `data`; each batch is counted in `metrics`, and its
    /// rows in `progress` as taken, before the next batch is pulled.
    pub(crate) fn spawn(
        mut data: SendableRecordBatchStream,
        mut encoder: RowEncoder,
        metrics: SinkMetrics,
        progress: Arc<OutputProgress>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let mut rows_before = 0u64;
            loop {
                let Ok(permit) = tx.reserve().await else {
                    return; // the statement is over
                };
                let batch = match data.next().await {
                    None => return,
                    Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                    Some(Ok(batch)) => batch,
                    Some(Err(e)) => return permit.send(Err(e)),
                };
                metrics.batch_received();
                progress.took(batch.num_rows() as u64);
                let first = rows_before;
                rows_before += batch.num_rows() as u64;
                let encoding = tokio::task::spawn_blocking(move || {
                    let encoded = encoder.encode(&batch, first);
                    (encoder, encoded)
                });
                let (back, encoded) = match encoding.await {
                    Ok(done) => done,
                    Err(e) => return permit.send(Err(panicked("encoding a batch", e))),
                };
                encoder = back;
                let failed = encoded.is_err();
                permit.send(encoded.map_err(DataFusionError::from));
                if failed {
                    return;
                }
            }
        });
        EncodedBatches {
            rx,
            task: Some(task),
        }
    }

    /// The next encoded batch; `None` once the query has ended and every batch came out.
    pub(crate) async fn next(&mut self) -> Option<Result<EncodedBatch>> {
        if let Some(next) = self.rx.recv().await {
            return Some(next);
        }
        // The channel closes when the task ends: normally, or by a panic (in the query,
        // which re-raises its own tasks' panics where it is polled), which must not pass
        // for the end of the input. The handle is dropped only once the task is joined,
        // so a caller that gives up waiting (a timeout) loses nothing.
        let joined = self.task.as_mut()?.await;
        self.task = None;
        match joined {
            Ok(()) => None,
            Err(e) => Some(Err(panicked("reading the query", e))),
        }
    }
}

impl Drop for EncodedBatches {
    /// The statement failed or was cancelled: stop pulling from the query.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn panicked(what: &str, e: tokio::task::JoinError) -> DataFusionError {
    DataFusionError::Internal(format!(
        "nats_sink: {what} failed unexpectedly ({e}); no row after the last confirmed one was published. This is a bug: please report it with the query"
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;
    use crate::options::Options;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("subject", DataType::Utf8, false),
        ]))
    }

    fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
        let subjects: Vec<String> = ids.clone().map(|i| format!("s.{i}")).collect();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids)),
                Arc::new(StringArray::from(subjects)),
            ],
        )
        .unwrap()
    }

    fn encoder() -> RowEncoder {
        let options: HashMap<String, String> =
            [("subject_field".to_string(), "subject".to_string())].into();
        RowEncoder::try_new(&schema(), &Options::parse(&options, false).unwrap()).unwrap()
    }

    fn stream(
        items: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> SendableRecordBatchStream {
        Box::pin(RecordBatchStreamAdapter::new(schema(), items))
    }

    #[tokio::test]
    async fn batches_come_out_in_query_order_without_the_empty_ones() {
        let input =
            futures::stream::iter([batch(0..3), batch(3..3), batch(3..8), batch(8..9)].map(Ok));
        let mut encoded = EncodedBatches::spawn(
            stream(input),
            encoder(),
            SinkMetrics::new("ahead_test"),
            Arc::default(),
        );
        let mut subjects = Vec::new();
        while let Some(batch) = encoded.next().await {
            let batch = batch.unwrap();
            subjects.extend((0..batch.len()).map(|i| batch.subject(i).unwrap().to_string()));
        }
        let expected: Vec<String> = (0..9).map(|i| format!("s.{i}")).collect();
        assert_eq!(subjects, expected);
    }

    #[tokio::test]
    async fn a_panic_in_the_query_is_an_error_not_the_end_of_the_input() {
        let input = futures::stream::iter([Ok(batch(0..2))]).chain(futures::stream::poll_fn(
            |_| -> std::task::Poll<Option<Result<RecordBatch>>> { panic!("a query task failed") },
        ));
        let mut encoded = EncodedBatches::spawn(
            stream(input),
            encoder(),
            SinkMetrics::new("ahead_test"),
            Arc::default(),
        );
        assert_eq!(encoded.next().await.unwrap().unwrap().len(), 2);
        let err = encoded
            .next()
            .await
            .expect("an error, not the end")
            .unwrap_err();
        assert!(err.to_string().contains("This is a bug"), "{err}");
        assert!(encoded.next().await.is_none());
    }

    #[tokio::test]
    async fn a_query_error_comes_after_the_batches_before_it() {
        let input = futures::stream::iter([
            Ok(batch(0..2)),
            Err(DataFusionError::Execution("division by zero".into())),
            Ok(batch(2..4)),
        ]);
        let mut encoded = EncodedBatches::spawn(
            stream(input),
            encoder(),
            SinkMetrics::new("ahead_test"),
            Arc::default(),
        );
        assert_eq!(encoded.next().await.unwrap().unwrap().len(), 2);
        let err = encoded.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("division by zero"), "{err}");
        assert!(encoded.next().await.is_none(), "nothing after the error");
    }
}
