//! Finds `WITH (...)` table hints in a parsed statement.
//!
//! sqlparser reads `WITH (...)` after a table name as MSSQL-style table hints and
//! DataFusion ignores them (sqlparser's `TableFactor::Table::with_hints`), so options written there would be lost without
//! a word. The engine refuses every statement bound for DataFusion that has any.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    SetExpr, Statement as SqlStatement, TableFactor, Visit, Visitor,
};

/// The name of the first table (in the order written) that carries `WITH (...)` hints
/// anywhere in `statement`: in subqueries, CTEs, the SELECT of an INSERT, the
/// statement under EXPLAIN, or the query of a COPY.
pub fn table_with_hints(statement: &DFStatement) -> Option<String> {
    hinted_table(statement)
}

/// What kind of statement `statement` is, for an error message: `SELECT`,
/// `EXPLAIN INSERT`, `WITH ... INSERT`, ...
pub fn statement_kind(statement: &DFStatement) -> String {
    match statement {
        DFStatement::Explain(explain) => format!("EXPLAIN {}", statement_kind(&explain.statement)),
        DFStatement::CopyTo(_) => "COPY".to_string(),
        DFStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".to_string(),
        DFStatement::Reset(_) => "RESET".to_string(),
        DFStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(query) if is_insert(&query.body) => "WITH ... INSERT".to_string(),
            SqlStatement::Query(_) => "SELECT".to_string(),
            SqlStatement::Insert(_) => "INSERT".to_string(),
            SqlStatement::CreateView(_) => "CREATE VIEW".to_string(),
            SqlStatement::CreateTable(_) => "CREATE TABLE ... AS".to_string(),
            _ => "this statement".to_string(),
        },
    }
}

/// `WITH cte AS (...) INSERT ...` (possibly under EXPLAIN): sqlparser reads it as a
/// query whose body is the INSERT.
pub fn is_cte_insert(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Explain(explain) => is_cte_insert(&explain.statement),
        DFStatement::Statement(s) => {
            matches!(s.as_ref(), SqlStatement::Query(query) if is_insert(&query.body))
        }
        _ => false,
    }
}

fn is_insert(body: &SetExpr) -> bool {
    matches!(body, SetExpr::Insert(_))
}

fn hinted_table(statement: &DFStatement) -> Option<String> {
    match statement {
        DFStatement::Statement(s) => first_hinted(s.as_ref()),
        DFStatement::Explain(explain) => hinted_table(&explain.statement),
        DFStatement::CopyTo(copy) => match &copy.source {
            CopyToSource::Query(query) => first_hinted(query.as_ref()),
            CopyToSource::Relation(_) => None,
        },
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => None,
    }
}

fn first_hinted(node: &impl Visit) -> Option<String> {
    match node.visit(&mut HintFinder) {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

/// Stops at the first table factor with non-empty `with_hints`.
struct HintFinder;

impl Visitor for HintFinder {
    type Break = String;

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
        match factor {
            TableFactor::Table {
                name, with_hints, ..
            } if !with_hints.is_empty() => ControlFlow::Break(name.to_string()),
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    use super::*;

    fn hinted(sql: &str) -> Option<String> {
        let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).unwrap();
        table_with_hints(&statements.pop_front().unwrap())
    }

    #[test]
    fn finds_hints_at_any_depth() {
        for (sql, table) in [
            ("SELECT * FROM t WITH (k = 'v') LIMIT 10", "t"),
            ("EXPLAIN INSERT INTO o SELECT * FROM s WITH (k = 'v')", "s"),
            (
                "EXPLAIN ANALYZE VERBOSE SELECT * FROM a JOIN b WITH (k = 'v') ON true",
                "b",
            ),
            (
                "WITH c AS (SELECT 1) INSERT INTO o SELECT * FROM c WITH (k = 'v')",
                "c",
            ),
            ("SELECT * FROM (SELECT * FROM x WITH (NOLOCK)) y", "x"),
            (
                "SELECT * FROM a WHERE a.v IN (SELECT v FROM w WITH (k = 'v'))",
                "w",
            ),
            ("CREATE VIEW v AS SELECT * FROM s.t WITH (k = 'v')", "s.t"),
            ("COPY (SELECT * FROM q WITH (k = 'v')) TO 'x.csv'", "q"),
        ] {
            assert_eq!(hinted(sql).as_deref(), Some(table), "{sql}");
        }
    }

    #[test]
    fn names_the_statement_kind() {
        let parse = |sql: &str| {
            DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
                .unwrap()
                .pop_front()
                .unwrap()
        };
        let cte = parse("WITH c AS (SELECT 1) INSERT INTO o SELECT * FROM c");
        assert_eq!(statement_kind(&cte), "WITH ... INSERT");
        assert!(is_cte_insert(&cte));
        let explain = parse("EXPLAIN ANALYZE INSERT INTO o SELECT 1");
        assert_eq!(statement_kind(&explain), "EXPLAIN INSERT");
        assert!(!is_cte_insert(&explain));
        assert_eq!(statement_kind(&parse("SELECT 1 LIMIT 1")), "SELECT");
    }

    #[test]
    fn plain_statements_have_none() {
        for sql in [
            "SELECT * FROM t LIMIT 10",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "INSERT INTO o WITH c AS (SELECT 1) SELECT * FROM c",
            "EXPLAIN SELECT 1",
            "SELECT * FROM generate_series(1, 3) WITH ORDINALITY",
        ] {
            assert_eq!(hinted(sql), None, "{sql}");
        }
    }
}
