//! The values `datagen` produces, as a pure function of the row index.
//!
//! Row `i` (from 0) holds: integers `i` (wrapping at the type's range), floats `i`,
//! strings `<column>-<i>`, booleans `i % 2 == 0`, timestamps and dates the given time.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Date64Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result};

/// Whether [`generate`] can fill a column of `data_type`.
pub fn supported(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Boolean
            | Timestamp(_, _)
            | Date32
            | Date64
    )
}

/// Rows `start..start + len` of a table with `schema`; `now` fills time columns.
pub fn generate(
    schema: &SchemaRef,
    start: u64,
    len: usize,
    now: SystemTime,
) -> Result<RecordBatch> {
    let rows = start..start + len as u64;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            // `as` wraps on purpose: an Int8 column counts 0..127, -128, ...
            let array: ArrayRef = match field.data_type() {
                DataType::Int8 => {
                    Arc::new(Int8Array::from_iter_values(rows.clone().map(|i| i as i8)))
                }
                DataType::Int16 => {
                    Arc::new(Int16Array::from_iter_values(rows.clone().map(|i| i as i16)))
                }
                DataType::Int32 => {
                    Arc::new(Int32Array::from_iter_values(rows.clone().map(|i| i as i32)))
                }
                DataType::Int64 => {
                    Arc::new(Int64Array::from_iter_values(rows.clone().map(|i| i as i64)))
                }
                DataType::UInt8 => {
                    Arc::new(UInt8Array::from_iter_values(rows.clone().map(|i| i as u8)))
                }
                DataType::UInt16 => Arc::new(UInt16Array::from_iter_values(
                    rows.clone().map(|i| i as u16),
                )),
                DataType::UInt32 => Arc::new(UInt32Array::from_iter_values(
                    rows.clone().map(|i| i as u32),
                )),
                DataType::UInt64 => Arc::new(UInt64Array::from_iter_values(rows.clone())),
                DataType::Float32 => Arc::new(Float32Array::from_iter_values(
                    rows.clone().map(|i| i as f32),
                )),
                DataType::Float64 => Arc::new(Float64Array::from_iter_values(
                    rows.clone().map(|i| i as f64),
                )),
                DataType::Utf8 => Arc::new(StringArray::from_iter_values(
                    rows.clone().map(|i| format!("{name}-{i}")),
                )),
                DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter_values(
                    rows.clone().map(|i| format!("{name}-{i}")),
                )),
                DataType::Utf8View => Arc::new(StringViewArray::from_iter_values(
                    rows.clone().map(|i| format!("{name}-{i}")),
                )),
                DataType::Boolean => Arc::new(BooleanArray::from_iter(
                    rows.clone().map(|i| Some(i % 2 == 0)),
                )),
                DataType::Timestamp(unit, tz) => {
                    let tz = tz.clone();
                    match unit {
                        TimeUnit::Second => Arc::new(
                            TimestampSecondArray::from_value(since_epoch.as_secs() as i64, len)
                                .with_timezone_opt(tz),
                        ),
                        TimeUnit::Millisecond => Arc::new(
                            TimestampMillisecondArray::from_value(
                                since_epoch.as_millis() as i64,
                                len,
                            )
                            .with_timezone_opt(tz),
                        ),
                        TimeUnit::Microsecond => Arc::new(
                            TimestampMicrosecondArray::from_value(
                                since_epoch.as_micros() as i64,
                                len,
                            )
                            .with_timezone_opt(tz),
                        ),
                        TimeUnit::Nanosecond => Arc::new(
                            TimestampNanosecondArray::from_value(
                                since_epoch.as_nanos() as i64,
                                len,
                            )
                            .with_timezone_opt(tz),
                        ),
                    }
                }
                DataType::Date32 => Arc::new(Date32Array::from_value(
                    (since_epoch.as_secs() / 86_400) as i32,
                    len,
                )),
                DataType::Date64 => Arc::new(Date64Array::from_value(
                    (since_epoch.as_secs() / 86_400 * 86_400_000) as i64,
                    len,
                )),
                other => {
                    return Err(DataFusionError::Execution(format!(
                        "datagen cannot generate column '{name}' of type {other}"
                    )));
                }
            };
            Ok(array)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Int8Type, Int64Type, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int8, true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    #[test]
    fn values_follow_the_row_index() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let batch = generate(&schema(), 126, 3, now).unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values(), &[126, 127, 128]);
        let small = batch.column(1).as_primitive::<Int8Type>();
        assert_eq!(small.values(), &[126, 127, -128]);
        let names = batch.column(2).as_string_view();
        assert_eq!(
            names.iter().flatten().collect::<Vec<_>>(),
            ["name-126", "name-127", "name-128"]
        );
        let x = batch
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(x.values(), &[126.0, 127.0, 128.0]);
        let ok = batch.column(4).as_boolean();
        assert_eq!(ok.iter().flatten().collect::<Vec<_>>(), [true, false, true]);
        let ts = batch
            .column(5)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(2), 1_700_000_000_000_000);
        assert_eq!(ts.timezone(), Some("UTC"));
        assert_eq!(batch.column(5).null_count(), 0);
    }

    #[test]
    fn every_supported_type_is_generated() {
        let types = [
            DataType::Int16,
            DataType::Int32,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
            DataType::Float32,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Date32,
            DataType::Date64,
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, None),
        ];
        let fields: Vec<_> = types
            .iter()
            .enumerate()
            .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), false))
            .collect();
        assert!(types.iter().all(supported));
        let batch = generate(&Arc::new(Schema::new(fields)), 0, 4, SystemTime::now()).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (4, types.len()));
        assert!(!supported(&DataType::Binary));
    }
}
