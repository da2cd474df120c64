//! Encoding cost: the sink's batch -> messages step against arrow-json alone.
//!
//! Baseline: arrow-json's line-delimited writer encoding the same batch into one buffer
//! (the ceiling for encoding: see `benches/README.md`). Sink: `RowEncoder::encode`, which also reads the
//! subject column into per-row subjects, leaves it out of the payload, range-checks the
//! timestamp column and slices the buffer per row. Report: sink time / baseline time.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use connector_nats::RowEncoder;
use connector_nats::options::Options;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::json::LineDelimitedWriter;

const ROWS: usize = 8192;

/// 8 columns, about 200 bytes of JSON per row, subjects with 100 distinct values.
fn batch() -> RecordBatch {
    let ids: Vec<i64> = (0..ROWS as i64).collect();
    let col = |f: &dyn Fn(i64) -> String| -> ArrayRef {
        Arc::new(StringArray::from(
            ids.iter().map(|&i| f(i)).collect::<Vec<_>>(),
        ))
    };
    RecordBatch::try_from_iter(vec![
        (
            "order_id",
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
        ),
        (
            "subject",
            col(&|i| format!("orders.region{}.created", i % 100)),
        ),
        (
            "customer",
            col(&|i| format!("customer-{:08}", i * 7919 % 100_000)),
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|&i| i as f64 * 1.25),
            )),
        ),
        (
            "paid",
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|&i| Some(i % 3 == 0)),
            )),
        ),
        (
            "created_at",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|&i| 1_700_000_000_000_000 + i),
            )),
        ),
        (
            "status",
            col(&|i| ["new", "paid", "shipped", "delivered"][i as usize % 4].to_string()),
        ),
        (
            "note",
            col(&|i| format!("order {i} placed through the web shop, standard delivery")),
        ),
    ])
    .unwrap()
}

fn bench_encode(c: &mut Criterion) {
    let batch = batch();
    let options: HashMap<String, String> =
        [("subject_field".to_string(), "subject".to_string())].into();
    let mut encoder =
        RowEncoder::try_new(&batch.schema(), &Options::parse(&options, false).unwrap()).unwrap();
    let payload_only = batch.project(&[0, 2, 3, 4, 5, 6, 7]).unwrap();

    let mut group = c.benchmark_group("encode_8192_rows");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("baseline_arrow_json_one_buffer", |b| {
        b.iter(|| {
            let mut writer = LineDelimitedWriter::new(Vec::with_capacity(2 << 20));
            writer.write(black_box(&payload_only)).unwrap();
            writer.finish().unwrap();
            black_box(writer.into_inner())
        })
    });
    group.bench_function("sink_row_encoder", |b| {
        b.iter(|| black_box(encoder.encode(black_box(&batch), 0).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
