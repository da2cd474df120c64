//! Which Arrow types have a JSON form, and the values arrow-json would get wrong.
//!
//! arrow-json writes every type a DataFusion query produces except unions and maps with
//! non-string keys; those are refused when the sink is created, naming the column. For
//! dates, times, timestamps and durations out of chrono's range arrow-json writes the text
//! `"ERROR: ..."` as the value instead of failing (arrow-json 59); [`first_unwritable`] finds
//! such values before a batch is encoded so the row fails instead of publishing garbage.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, make_array};
use datafusion::arrow::compute::{max, min};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Why `data_type` has no JSON form, or `None` if it has one.
pub fn unsupported(data_type: &DataType) -> Option<&'static str> {
    match data_type {
        DataType::Union(_, _) => Some("unions are not supported: select one member or CAST it"),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => {
                if crate::subject::is_string_type(fields[0].data_type()) {
                    unsupported(fields[1].data_type())
                } else {
                    Some("JSON object keys must be strings: CAST the map keys to VARCHAR")
                }
            }
            _ => Some("malformed map type"),
        },
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => unsupported(f.data_type()),
        DataType::Struct(fields) => fields.iter().find_map(|f| unsupported(f.data_type())),
        DataType::Dictionary(_, value) => unsupported(value),
        DataType::RunEndEncoded(_, values) => unsupported(values.data_type()),
        _ => None,
    }
}

/// A value arrow-json cannot write: the row (when the column is not nested) and the value.
#[derive(Debug, PartialEq, Eq)]
pub struct Unwritable {
    pub row: Option<usize>,
    pub reason: String,
}

/// The first date/time value in `array` that is outside the representable range.
///
/// Costs one min/max pass per temporal column: the representable values of each of these
/// types form one contiguous range, so when the extremes can be written, all can.
pub fn first_unwritable(array: &ArrayRef) -> Option<Unwritable> {
    let nested = |child: &ArrayRef| {
        first_unwritable(child).map(|u| Unwritable {
            row: None,
            reason: u.reason,
        })
    };
    match array.data_type() {
        DataType::Date32 | DataType::Time32(_) => {
            let ints = Int32Array::from(reinterpret(array, DataType::Int32));
            let bounds = [min(&ints), max(&ints)].map(|v| v.map(|v| v as i64));
            check_bounds(array, bounds)
        }
        DataType::Date64
        | DataType::Time64(_)
        | DataType::Timestamp(_, _)
        | DataType::Duration(_) => {
            let ints = Int64Array::from(reinterpret(array, DataType::Int64));
            check_bounds(array, [min(&ints), max(&ints)])
        }
        DataType::List(_) => nested(array.as_list::<i32>().values()),
        DataType::LargeList(_) => nested(array.as_list::<i64>().values()),
        DataType::FixedSizeList(_, _) => nested(array.as_fixed_size_list().values()),
        DataType::ListView(_) => nested(array.as_list_view::<i32>().values()),
        DataType::LargeListView(_) => nested(array.as_list_view::<i64>().values()),
        DataType::Struct(_) => array.as_struct().columns().iter().find_map(nested),
        DataType::Map(_, _) => {
            nested(&(std::sync::Arc::new(array.as_map().entries().clone()) as ArrayRef))
        }
        DataType::Dictionary(_, _) => nested(array.as_any_dictionary().values()),
        DataType::RunEndEncoded(_, _) => {
            first_unwritable_run_values(array).and_then(|v| nested(&v))
        }
        _ => None,
    }
}

/// Whether a type (or anything nested in it) needs [`first_unwritable`].
pub fn needs_range_check(data_type: &DataType) -> bool {
    match data_type {
        DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Timestamp(_, _)
        | DataType::Duration(_) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => needs_range_check(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| needs_range_check(f.data_type())),
        DataType::Dictionary(_, value) => needs_range_check(value),
        DataType::RunEndEncoded(_, values) => needs_range_check(values.data_type()),
        _ => false,
    }
}

fn first_unwritable_run_values(array: &ArrayRef) -> Option<ArrayRef> {
    use datafusion::arrow::datatypes::{Int16Type, Int32Type, Int64Type};
    match array.data_type() {
        DataType::RunEndEncoded(ends, _) => match ends.data_type() {
            DataType::Int16 => Some(array.as_run::<Int16Type>().values().clone()),
            DataType::Int32 => Some(array.as_run::<Int32Type>().values().clone()),
            DataType::Int64 => Some(array.as_run::<Int64Type>().values().clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The same buffers seen as another primitive type of the same width (zero copy).
fn reinterpret(array: &ArrayRef, as_type: DataType) -> datafusion::arrow::array::ArrayData {
    array
        .to_data()
        .into_builder()
        .data_type(as_type)
        .build()
        .expect("same-width primitive reinterpretation is valid")
}

fn check_bounds(array: &ArrayRef, bounds: [Option<i64>; 2]) -> Option<Unwritable> {
    let writable = |v: i64| {
        let ints = match array.data_type() {
            DataType::Date32 | DataType::Time32(_) => Int32Array::from(vec![v as i32]).into_data(),
            _ => Int64Array::from(vec![v]).into_data(),
        };
        let single = make_array(
            ints.into_builder()
                .data_type(array.data_type().clone())
                .build()
                .expect("same-width primitive reinterpretation is valid"),
        );
        format_value(&single, 0).is_ok()
    };
    if bounds.into_iter().flatten().all(writable) {
        return None;
    }
    // Rare: find the row to name it.
    (0..array.len())
        .filter(|&row| array.is_valid(row))
        .find_map(|row| {
            format_value(array, row).err().map(|reason| Unwritable {
                row: Some(row),
                reason,
            })
        })
}

fn format_value(array: &ArrayRef, row: usize) -> Result<String, String> {
    let options = FormatOptions::default();
    let formatter = ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| e.to_string())?;
    formatter
        .value(row)
        .try_to_string()
        .map_err(|e| format!("{} value out of range for JSON ({e})", array.data_type()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, ListArray, StructArray, Time64MicrosecondArray, TimestampSecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Fields, Int32Type, UnionFields, UnionMode};
    use std::sync::Arc;

    #[test]
    fn unions_and_non_string_map_keys_have_no_json_form() {
        let union = DataType::Union(UnionFields::empty(), UnionMode::Sparse);
        assert!(unsupported(&union).is_some());
        let map_of = |key: DataType| {
            DataType::Map(
                Arc::new(Field::new_struct(
                    "entries",
                    vec![
                        Field::new("key", key, false),
                        Field::new("value", DataType::Int32, true),
                    ],
                    false,
                )),
                false,
            )
        };
        assert!(
            unsupported(&map_of(DataType::Int32))
                .unwrap()
                .contains("keys must be strings")
        );
        assert_eq!(unsupported(&map_of(DataType::Utf8)), None);
        let list_of_union = DataType::new_list(union, true);
        assert!(unsupported(&list_of_union).is_some());
        assert_eq!(unsupported(&DataType::Int64), None);
    }

    #[test]
    fn in_range_timestamps_pass() {
        let array: ArrayRef = Arc::new(TimestampSecondArray::from(vec![
            Some(0),
            None,
            Some(1_700_000_000),
        ]));
        assert_eq!(first_unwritable(&array), None);
    }

    #[test]
    fn out_of_range_timestamp_is_found_with_its_row() {
        let array: ArrayRef = Arc::new(TimestampSecondArray::from(vec![
            Some(0),
            Some(i64::MAX),
            Some(1),
        ]));
        let found = first_unwritable(&array).unwrap();
        assert_eq!(found.row, Some(1));
        assert!(found.reason.contains("out of range"), "{}", found.reason);
    }

    #[test]
    fn out_of_range_date_and_time_are_found() {
        let date: ArrayRef = Arc::new(Date32Array::from(vec![1, i32::MAX]));
        assert_eq!(first_unwritable(&date).unwrap().row, Some(1));
        // 25 hours is not a time of day.
        let time: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![25 * 3_600_000_000]));
        assert_eq!(first_unwritable(&time).unwrap().row, Some(0));
    }

    #[test]
    fn nested_out_of_range_values_are_found_without_a_row() {
        let inner: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MIN]));
        let strukt: ArrayRef = Arc::new(StructArray::new(
            Fields::from(vec![Field::new("t", inner.data_type().clone(), true)]),
            vec![inner],
            None,
        ));
        assert!(needs_range_check(strukt.data_type()));
        assert_eq!(first_unwritable(&strukt).unwrap().row, None);
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1)]),
        ]));
        assert!(!needs_range_check(list.data_type()));
        assert_eq!(first_unwritable(&list), None);
    }
}
