//! Tests of the statement splitter and the trailing `WITH (...)` parser.

use super::*;

fn texts(script: &str) -> Vec<String> {
    split_statements(script)
        .unwrap()
        .into_iter()
        .map(|s| s.text)
        .collect()
}

#[test]
fn splits_on_top_level_semicolons() {
    assert_eq!(
        texts("SELECT 1; SELECT 2;\n\nSELECT 3"),
        ["SELECT 1", "SELECT 2", "SELECT 3"]
    );
}

#[test]
fn keeps_semicolons_in_strings_and_comments() {
    let script = "SELECT 'a;b' AS x; -- c;d\nSELECT 2 /* e; f */ AS y;";
    // A statement starts at its first token: leading comments are left out.
    assert_eq!(
        texts(script),
        ["SELECT 'a;b' AS x", "SELECT 2 /* e; f */ AS y"]
    );
}

#[test]
fn drops_empty_statements_and_counts_lines() {
    let statements = split_statements(";; -- only a comment\n;\nSELECT 1;\n\n  SELECT 2").unwrap();
    assert_eq!(statements.len(), 2);
    assert_eq!((statements[0].number, statements[0].line), (1, 3));
    assert_eq!((statements[1].number, statements[1].line), (2, 5));
    assert_eq!(statements[1].text, "SELECT 2");
}

#[test]
fn keeps_multibyte_text_intact() {
    assert_eq!(
        texts("SELECT 'héllo ✓'; SELECT 'ß'"),
        ["SELECT 'héllo ✓'", "SELECT 'ß'"]
    );
}

#[test]
fn reports_unterminated_string_in_its_statement() {
    let err = split_statements("SELECT 1;\n;\nSELECT 2;\n\nSELECT\n'oops").unwrap_err();
    assert!(err.message.contains("Unterminated"), "{err}");
    assert_eq!((err.number, err.line), (3, 5));
}

#[test]
fn splits_trailing_with_from_insert() {
    let sql = "INSERT INTO out SELECT a, 'x' AS subject FROM t\nWITH (connector = 'nats_sink', Subject_Field = 'subject')";
    let split = split_trailing_with(sql).unwrap().unwrap();
    assert_eq!(
        split.statement,
        "INSERT INTO out SELECT a, 'x' AS subject FROM t"
    );
    assert_eq!(
        split.options,
        [
            ("connector".to_string(), "nats_sink".to_string()),
            ("subject_field".to_string(), "subject".to_string())
        ]
    );
}

#[test]
fn leaves_ctes_alone() {
    let sql = "INSERT INTO out WITH w AS (SELECT 1 AS a) SELECT a FROM w";
    assert_eq!(split_trailing_with(sql).unwrap(), None);
    let sql = "INSERT INTO out WITH w AS (SELECT 1 AS a) SELECT a FROM w WITH (connector = 'x')";
    let split = split_trailing_with(sql).unwrap().unwrap();
    assert_eq!(
        split.statement,
        "INSERT INTO out WITH w AS (SELECT 1 AS a) SELECT a FROM w"
    );
    assert_eq!(split.options.len(), 1);
}

#[test]
fn ignores_with_inside_strings_and_nested_parentheses() {
    assert_eq!(
        split_trailing_with("INSERT INTO out SELECT 'WITH (a = ''b'')' AS s").unwrap(),
        None
    );
    assert_eq!(
        split_trailing_with("INSERT INTO o SELECT * FROM (SELECT * FROM t WITH (k = 'v'))")
            .unwrap(),
        None
    );
    let sql =
        "INSERT INTO o SELECT concat(a, (b)) AS s FROM (SELECT 1) x WITH (k = 'a;b)') -- done";
    let split = split_trailing_with(sql).unwrap().unwrap();
    assert_eq!(
        split.statement,
        "INSERT INTO o SELECT concat(a, (b)) AS s FROM (SELECT 1) x"
    );
    assert_eq!(split.options, [("k".to_string(), "a;b)".to_string())]);
}

#[test]
fn strips_with_from_create_table() {
    let sql = "CREATE TABLE t (id BIGINT, name VARCHAR(20)) WITH ('connector' = 'datagen', row_limit = '10',)";
    let split = split_trailing_with(sql).unwrap().unwrap();
    assert_eq!(
        split.statement,
        "CREATE TABLE t (id BIGINT, name VARCHAR(20))"
    );
    assert_eq!(
        split.options[0],
        ("connector".to_string(), "datagen".to_string())
    );
    assert_eq!(
        split.options[1],
        ("row_limit".to_string(), "10".to_string())
    );
}

#[test]
fn option_values_are_unescaped_and_keys_may_be_dotted() {
    let options = parse_options("a.b = 'it''s', \"MiXed\" = ''").unwrap();
    assert_eq!(
        options,
        [
            ("a.b".to_string(), "it's".to_string()),
            ("mixed".to_string(), String::new())
        ]
    );
}

#[test]
fn option_errors_name_the_option() {
    let err = parse_options("rows_per_second = 1000").unwrap_err();
    assert!(
        err.0.contains("'rows_per_second'") && err.0.contains("rows_per_second = '...'"),
        "{err}"
    );
    let err = parse_options("a = 'x', a = 'y'").unwrap_err();
    assert!(err.0.contains("'a' is given twice"), "{err}");
    let err = parse_options("a 'x'").unwrap_err();
    assert!(err.0.contains("expected '=' after option 'a'"), "{err}");
    let err = parse_options("a = 'x' b = 'y'").unwrap_err();
    assert!(err.0.contains("after the value of option 'a'"), "{err}");
    let err = parse_options("a =").unwrap_err();
    assert!(err.0.contains("option 'a' has no value"), "{err}");
    assert!(split_trailing_with("SELECT * FROM t WITH (NOLOCK)").is_err());
}

#[test]
fn option_errors_never_echo_values() {
    for text in [
        "password = hunter2",
        "password = \"hunter2\"",
        "password = 12345678",
        "password = 'x' 'hunter2'",
        "password = 'x' 12345678",
        "a = 'x', 12345678 = 'y'",
        "a = 'x', N'hunter2' = 'y'",
    ] {
        let err = parse_options(text).unwrap_err().0;
        assert!(
            !err.contains("hunter2") && !err.contains("12345678"),
            "{text}: {err}"
        );
    }
    let err = parse_options("password = hunter2").unwrap_err().0;
    assert!(err.contains("as in password = '...'"), "{err}");
    // A word after a value is shown: it is usually the next key, missing its comma.
    let err = parse_options("a = 'x' b = 'y'").unwrap_err().0;
    assert!(err.ends_with("found b"), "{err}");
}

#[test]
fn debug_never_shows_option_values() {
    let sql = "INSERT INTO o SELECT 1 WITH (connector = 'nats_sink', password = 'hunter2')";
    let split = split_trailing_with(sql).unwrap().unwrap();
    let debug = format!("{split:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("nats_sink") && debug.contains("password"),
        "{debug}"
    );
    let statements = split_statements(&format!("SELECT 1;\n{sql}")).unwrap();
    let debug = format!("{statements:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("INSERT INTO o") && debug.contains("line: 2"),
        "{debug}"
    );
}

#[test]
fn a_statement_is_ready_at_its_semicolon_outside_strings_and_comments() {
    for ready in [
        "SELECT 1;",
        "SELECT 1;  -- done",
        "",
        "  \n",
        "-- only a comment",
        "a; b;",
    ] {
        assert!(ends_statement(ready), "{ready:?}");
    }
    for typing in [
        "SELECT 1",
        "SELECT ';'",
        "SELECT 'unclosed;",
        "SELECT 1 /* ; */",
        "SELECT 1; SELECT 2",
        "SELECT 1 -- ;",
    ] {
        assert!(!ends_statement(typing), "{typing:?}");
    }
}
