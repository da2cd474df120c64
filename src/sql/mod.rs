//! The engine's SQL front end: statement splitting and the token-level handling of the
//! statements DataFusion cannot take as written.

mod hints;
mod split;
mod statement;

pub use hints::{is_cte_insert, statement_kind, table_with_hints};
pub use split::{
    ScriptError, ScriptStatement, SpannedToken, SyntaxError, TrailingWith, ends_statement,
    parse_options, split_statements, split_trailing_with, tokenize,
};
pub use statement::{CreateConnection, EngineStatement, classify, summary};
