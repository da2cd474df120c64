//! DataFusion's own sqllogictest files, run through the engine the CLI runs (each
//! record goes through `Engine::execute_statement`, as a statement of `streamsql run`
//! does): the engine's SQL front end must not change what DataFusion's SQL means.
//!
//! The files in `tests/it/slt/` are copied unchanged from the `datafusion-sqllogictest`
//! 55.2.0 crate (`test_files/`, Apache-2.0, their licence headers kept). [`FILES`] is
//! every file of the crate whose statements read no data file (the CSV and Parquet test
//! data of DataFusion's repository is not in the crate), less those that need tables or
//! functions DataFusion's runner registers for them (`dictionary_struct`, `metadata`,
//! `arrow_field`, `union_function`, `range_partitioning`, `async_udf`,
//! `information_schema_columns`, `information_schema_table_types`,
//! `cast_extension_type_metadata`), and less the memory-limit spill tests and `imdb.slt`,
//! which together take longer than all the others in a debug build. One file is left out
//! as the engine's own difference: `information_schema_multiple_catalogs.slt` expects the
//! information schema off, and the engine turns it on. Values are written as DataFusion's
//! runner writes them (`NULL`, `(empty)`, floats rounded to 12 decimals), and the session
//! is set up as it sets it up (4 target partitions).

use std::path::Path;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float16Type, Float32Type, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sqllogictest::{ColumnType, DBOutput, Runner};
use streamsql::{Engine, EngineError, Outcome};

/// The files run, each for what it covers.
const FILES: &[&str] = &[
    // PREPARE / EXECUTE with parameters: the statement whose rows the engine once dropped.
    "prepare.slt",
    // Expressions: CASE, NULL handling, IN lists, operators, strings, common
    // subexpressions, simplification, -0.0.
    "case.slt",
    "coalesce.slt",
    "nullif.slt",
    "nvl.slt",
    "nvl2.slt",
    "in_list.slt",
    "operator.slt",
    "strings.slt",
    "cse.slt",
    "simplify_expr.slt",
    "negative_zero.slt",
    // Names and types: aliases, casts, coercion, structs.
    "alias.slt",
    "cast.slt",
    "type_coercion.slt",
    "struct.slt",
    // Query shapes: joins, lateral joins, UNION BY NAME, QUALIFY, top-n windows,
    // aggregate rewrites, table functions, the pipe syntax.
    "join_is_not_distinct_from.slt",
    "lateral_join.slt",
    "union_by_name.slt",
    "qualify.slt",
    "window_topn.slt",
    "aggregates_simplify.slt",
    "table_functions.slt",
    "pipe_operator.slt",
    // SET and SHOW of session options.
    "set_variable.slt",
    // Every other file that needs no data from outside the crate, no test fixture of
    // DataFusion's runner and no feature left out of this build.
    "join_only.slt",
    "insert_values_placeholders.slt",
    "limit_single_row_batches.slt",
    "issue_17138.slt",
    "misc.slt",
    "aggregate_any_value.slt",
    "join_lists.slt",
    "same_column_name_cross_join.slt",
    "lead_lag_extreme_offsets.slt",
    "list_view.slt",
    "slt_features.slt",
    "first_last_nested.slt",
    "truncate.slt",
    "run_end_encoded.slt",
    "float16.slt",
    "count_star_rule.slt",
    "arrow_try_cast.slt",
    "date_bin_errors.slt",
    "update.slt",
    "array_product.slt",
    "array_normalize.slt",
    "delete.slt",
    "array_sum.slt",
    "push_down_filter_unnest.slt",
    "propagate_empty_relation_outer_join.slt",
    "array_avg.slt",
    "cosine_distance.slt",
    "ident_normalization.slt",
    "inner_product.slt",
    "array_scale.slt",
    "dml_delete.slt",
    "to_timestamp_timezone.slt",
    "binary_view.slt",
    "simplify_predicates.slt",
    "array_add.slt",
    "array_subtract.slt",
    "merge_into.slt",
    "encoding.slt",
    "push_down_filter_outer_joins.slt",
    "named_arguments.slt",
    "array_query.slt",
    "join_limit_pushdown.slt",
    "options.slt",
    "dml_update.slt",
    "functional_dependencies.slt",
    "floor_preimage.slt",
    "pwmj.slt",
    "cast_to_type.slt",
    "binary.slt",
    "arrow_typeof.slt",
    "string_numeric_coercion.slt",
    "eliminate_outer_join.slt",
    "sort_merge_join.slt",
    "aggregates_topk.slt",
    "parquet_cdc_config.slt",
    "create_function.slt",
    "push_down_topk_through_join.slt",
];

/// DataFusion's column types in sqllogictest files: B, D, I, P, R, T and `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column(char);

impl ColumnType for Column {
    fn from_char(value: char) -> Option<Self> {
        Some(Column(if "BDIPRT".contains(value) { value } else { '?' }))
    }

    fn to_char(&self) -> char {
        self.0
    }
}

fn column_of(data_type: &DataType) -> Column {
    Column(match data_type {
        DataType::Boolean => 'B',
        t if t.is_integer() => 'I',
        t if t.is_floating() || t.is_decimal() => 'R',
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => 'T',
        DataType::Date32 | DataType::Date64 | DataType::Time32(_) | DataType::Time64(_) => 'D',
        DataType::Timestamp(_, _) => 'P',
        DataType::Dictionary(key, value)
            if key.is_integer()
                && matches!(
                    value.as_ref(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) =>
        {
            'T'
        }
        _ => '?',
    })
}

/// `value` (a plain decimal number as text) rounded half to even at `places` decimals,
/// with trailing zeros removed: how DataFusion's runner writes floats and decimals.
fn round_decimal(value: &str, places: usize) -> String {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut kept: Vec<u8> = int.bytes().chain(frac.bytes().take(places)).collect();
    let dropped = frac.as_bytes().get(places..).unwrap_or_default();
    if let Some((&first, rest)) = dropped.split_first() {
        let odd = kept.last().is_some_and(|d| (d - b'0') % 2 == 1);
        if first > b'5' || (first == b'5' && (rest.iter().any(|&d| d != b'0') || odd)) {
            let mut i = kept.len();
            loop {
                if i == 0 {
                    kept.insert(0, b'1');
                    break;
                }
                i -= 1;
                if kept[i] == b'9' {
                    kept[i] = b'0';
                } else {
                    kept[i] += 1;
                    break;
                }
            }
        }
    }
    let int_len = kept.len() - frac.len().min(places);
    let text = String::from_utf8(kept).expect("digits");
    let (int, frac) = text.split_at(int_len);
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let magnitude = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if negative && magnitude != "0" {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

fn float(value: f64, text: String) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        round_decimal(&text, 12)
    }
}

/// One cell as DataFusion's runner writes it.
fn cell(column: &ArrayRef, row: usize) -> Result<String, datafusion::arrow::error::ArrowError> {
    if column.is_null(row) {
        return Ok("NULL".to_string());
    }
    Ok(match column.data_type() {
        DataType::Boolean => column.as_boolean().value(row).to_string(),
        DataType::Float16 => {
            let v = column.as_primitive::<Float16Type>().value(row);
            float(v.to_f64(), v.to_string())
        }
        DataType::Float32 => {
            let v = column.as_primitive::<Float32Type>().value(row);
            float(f64::from(v), v.to_string())
        }
        DataType::Float64 => {
            let v = column.as_primitive::<Float64Type>().value(row);
            float(v, v.to_string())
        }
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s) => {
            let text = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?
                .value(row)
                .to_string();
            round_decimal(&text, usize::try_from(*s).unwrap_or(0))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?
                .value(row)
                .to_string();
            if text.is_empty() {
                "(empty)".to_string()
            } else {
                text.trim_end_matches('\n').replace('\0', "\\0")
            }
        }
        DataType::Dictionary(_, _) => {
            let dictionary = column.as_any_dictionary();
            let key = dictionary.normalized_keys()[row];
            cell(dictionary.values(), key)?
        }
        _ => {
            // DataFusion's own display settings (durations as `0 days 0 hours ...`).
            let options = datafusion::config::FormatOptions {
                null: "NULL".to_string(),
                ..Default::default()
            };
            let options: FormatOptions =
                (&options)
                    .try_into()
                    .map_err(|e: datafusion::error::DataFusionError| {
                        datafusion::arrow::error::ArrowError::ExternalError(Box::new(e))
                    })?;
            ArrayFormatter::try_new(column.as_ref(), &options)?
                .value(row)
                .to_string()
        }
    })
}

/// A multi-line last cell (a plan) continues on rows of its own, numbered, with
/// leading spaces shown as `-` (sqllogictest ignores whitespace).
fn expand(mut row: Vec<String>) -> Vec<Vec<String>> {
    let Some(last) = row.last().filter(|c| c.contains('\n')).cloned() else {
        return vec![row];
    };
    row.pop();
    let mut rows = vec![row];
    for (i, line) in last.split('\n').enumerate() {
        let content = line.trim_start();
        let indent = "-".repeat(line.len() - content.len());
        rows.push(vec![format!("{:02}){indent}{content}", i + 1)]);
    }
    rows
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, SltError> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|column| cell(column, row))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SltError(format!("cannot format a value: {e}")))?;
            rows.extend(expand(cells));
        }
    }
    Ok(rows)
}

/// An error as DataFusion's runner words it (`DataFusion error: ...` for DataFusion's
/// own), so the files' expected error patterns apply.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

impl From<EngineError> for SltError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DataFusion { source, .. } => {
                SltError(format!("DataFusion error: {source}"))
            }
            other => SltError(other.to_string()),
        }
    }
}

/// The engine as sqllogictest's database.
struct EngineDb(Engine);

#[async_trait]
impl sqllogictest::AsyncDB for EngineDb {
    type Error = SltError;
    type ColumnType = Column;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Column>, SltError> {
        let mut output = DBOutput::StatementComplete(0);
        for statement in Engine::parse_script(sql)? {
            output = match self.0.execute_statement(&statement).await? {
                Outcome::Query { schema, batches } => {
                    let types: Vec<_> = schema
                        .fields()
                        .iter()
                        .map(|f| column_of(f.data_type()))
                        .collect();
                    let rows = rows_of(&batches)?;
                    if types.is_empty() && rows.is_empty() {
                        DBOutput::StatementComplete(0)
                    } else {
                        DBOutput::Rows { types, rows }
                    }
                }
                // DataFusion answers an INSERT with its row count.
                Outcome::Insert(summary) => DBOutput::Rows {
                    types: vec![Column('I')],
                    rows: vec![vec![summary.rows.to_string()]],
                },
                _ => DBOutput::StatementComplete(0),
            };
        }
        Ok(output)
    }

    fn engine_name(&self) -> &str {
        "DataFusion"
    }

    async fn shutdown(&mut self) {}
}

async fn run_file(path: &Path) -> Result<(), String> {
    let mut runner = Runner::new(|| async {
        let mut engine = Engine::new();
        // As DataFusion's runner sets up its session.
        engine
            .execute("SET datafusion.execution.target_partitions = 4;")
            .await
            .map_err(SltError::from)?;
        Ok(EngineDb(engine))
    });
    runner.add_label("Datafusion");
    runner.with_column_validator(sqllogictest::strict_column_validator);
    runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(false).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datafusions_own_sqllogictest_files_pass_through_the_engine() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/slt");
    let mut failures = Vec::new();
    for file in FILES {
        if let Err(e) = run_file(&dir.join(file)).await {
            failures.push(format!("{file}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn values_are_written_as_datafusions_runner_writes_them() {
    assert_eq!(round_decimal("1.0000000000011", 12), "1.000000000001");
    assert_eq!(round_decimal("0.1234567890125", 12), "0.123456789012");
    assert_eq!(round_decimal("0.1234567890135", 12), "0.123456789014");
    assert_eq!(round_decimal("9.9999999999999", 12), "10");
    assert_eq!(round_decimal("-0.0000000000001", 12), "0");
    assert_eq!(round_decimal("12.30", 2), "12.3");
    assert_eq!(round_decimal("-7", 12), "-7");
    assert_eq!(round_decimal("100", 0), "100");
    assert_eq!(float(f64::NAN, String::new()), "NaN");
    assert_eq!(float(-f64::INFINITY, String::new()), "-Infinity");
    assert_eq!(float(0.1 + 0.2, (0.1f64 + 0.2).to_string()), "0.3");
}
