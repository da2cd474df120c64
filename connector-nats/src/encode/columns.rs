//! Finding the columns the options name in the input schema, and checking their types,
//! when the sink is created: a missing column or a type that cannot serve is an error
//! naming the option, the column and what to do.

use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::error::{NatsSinkError, Result};
use crate::options::PAYLOAD_FIELD;
use crate::subject;

/// The index of column `name`, which option `option` names.
pub(crate) fn column_index(schema: &SchemaRef, option: &'static str, name: &str) -> Result<usize> {
    schema
        .index_of(name)
        .map_err(|_| NatsSinkError::MissingColumn {
            option,
            column: name.to_string(),
            available: column_names(schema),
        })
}

/// A subject or reply-to column: it must hold strings.
pub(crate) fn routing_column(
    schema: &SchemaRef,
    option: &'static str,
    name: &str,
) -> Result<usize> {
    let index = column_index(schema, option, name)?;
    let data_type = schema.field(index).data_type();
    if !subject::is_string_type(data_type) {
        return Err(NatsSinkError::NotAStringColumn {
            option,
            column: name.to_string(),
            data_type: data_type.clone(),
        });
    }
    Ok(index)
}

/// The types whose bytes a raw payload can be.
pub(crate) fn is_raw_type(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
    )
}

/// The `payload_field` column of `format = 'raw'`: binary or string.
pub(crate) fn raw_payload_column(schema: &SchemaRef, name: &str) -> Result<usize> {
    let index = column_index(schema, PAYLOAD_FIELD, name)?;
    let data_type = schema.field(index).data_type();
    if !is_raw_type(data_type) {
        return Err(NatsSinkError::InvalidOption {
            option: PAYLOAD_FIELD.into(),
            problem: format!(
                "column '{name}' has type {data_type}; a raw payload is the bytes of a binary or string column: CAST it to BYTEA or VARCHAR"
            ),
        });
    }
    Ok(index)
}

/// The schema's column names, for messages.
pub(crate) fn column_names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
