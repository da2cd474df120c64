//! One test per option rule.

use super::*;
use crate::config::{ConnectionConfig, SinkConfig};
use crate::values::{parse_headers, parse_servers};

fn opts(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> Result<Options> {
    Options::parse(&opts(pairs), false)
}

fn err(pairs: &[(&str, &str)]) -> String {
    parse(pairs).unwrap_err().to_string()
}

#[test]
fn every_option_is_declared_once_with_a_doc() {
    let mut names: Vec<_> = OPTIONS.iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), OPTIONS.len());
    assert!(OPTIONS.iter().all(|s| !s.doc.is_empty()));
}

#[test]
fn unknown_option_suggests_the_closest_name() {
    let text = err(&[("subjet_field", "s")]);
    assert!(text.contains("unknown option 'subjet_field'"), "{text}");
    assert!(text.contains("did you mean 'subject_field'?"), "{text}");
}

#[test]
fn unknown_option_far_from_any_lists_the_valid_ones() {
    let text = err(&[("compression_level_for_payloads", "s")]);
    assert!(text.contains("valid options: servers"), "{text}");
}

#[test]
fn keys_are_case_insensitive() {
    let o = parse(&[("Subject_Field", "s")]).unwrap();
    assert_eq!(o.raw(SUBJECT_FIELD), Some("s"));
}

#[test]
fn defaults_come_from_the_declaration() {
    let o = parse(&[]).unwrap();
    assert_eq!(o.raw(FORMAT), Some("json"));
    assert_eq!(o.raw(SERVERS), spec(SERVERS).unwrap().default);
    assert_eq!(o.raw(SUBJECT), None);
}

#[test]
fn sink_options_are_refused_in_create_connection() {
    let e = Options::parse(&opts(&[("subject", "a")]), true).unwrap_err();
    assert!(e.to_string().contains("belongs on the sink"), "{e}");
    assert!(Options::parse(&opts(&[("servers", "nats://h:1")]), true).is_ok());
}

#[test]
fn servers_as_json_array_or_comma_list() {
    assert_eq!(
        parse_servers("servers", r#"["nats://a:1","nats://b:2"]"#).unwrap(),
        vec!["nats://a:1", "nats://b:2"]
    );
    assert_eq!(
        parse_servers("servers", "nats://a:1, nats://b:2").unwrap(),
        vec!["nats://a:1", "nats://b:2"]
    );
    assert!(err(&[("servers", "[1,2]")]).contains("JSON array of strings"));
    assert!(err(&[("servers", "")]).contains("no server given"));
}

#[test]
fn unsupported_format_lists_supported_ones() {
    let text = err(&[("format", "avro")]);
    assert!(
        text.contains("'avro' is not supported; write one of: json"),
        "{text}"
    );
}

#[test]
fn durations_accept_units_and_bare_seconds() {
    assert_eq!(
        parse_duration("o", "500ms").unwrap(),
        Duration::from_millis(500)
    );
    assert_eq!(parse_duration("o", "2").unwrap(), Duration::from_secs(2));
    assert!(err(&[("connect_timeout", "soon")]).contains("'soon' is not a positive duration"));
    assert!(err(&[("connect_timeout", "0s")]).contains("positive duration"));
    assert!(err(&[("connect_timeout", "-1")]).contains("positive duration"));
    assert!(err(&[("connect_timeout", "1e20")]).contains("not a positive duration"));
    assert!(err(&[("connect_timeout", "100000")]).contains("maximum of 24h"));
    assert!(err(&[("confirm_timeout", "30d")]).contains("maximum of 24h"));
}

#[test]
fn headers_must_be_an_object_of_strings_with_valid_names() {
    assert_eq!(
        parse_headers("headers", r#"{"a":"1","B-2":"x y"}"#).unwrap(),
        vec![("B-2".into(), "x y".into()), ("a".into(), "1".into())]
    );
    assert!(err(&[("headers", "[1]")]).contains("not a JSON object"));
    assert!(err(&[("headers", r#"{"a":1}"#)]).contains("must have a string value"));
    assert!(err(&[("headers", r#"{"a b":"1"}"#)]).contains("not a valid header name"));
    assert!(err(&[("headers", r#"{"a":"1\n2"}"#)]).contains("line break"));
}

#[test]
fn booleans_are_strict() {
    assert!(err(&[("payload_include_routing", "yes")]).contains("write 'true' or 'false'"));
}

#[test]
fn fixed_subject_is_validated_at_parse_time() {
    assert!(err(&[("subject", "orders.*")]).contains("not a valid subject"));
}

#[test]
fn auth_combinations_are_checked() {
    assert!(
        err(&[("token", "t"), ("username", "u"), ("password", "p")]).contains("cannot be combined")
    );
    assert!(err(&[("username", "u")]).contains("give both"));
}

#[test]
fn subject_and_subject_field_are_exclusive_and_one_is_required() {
    let both = parse(&[("subject", "a"), ("subject_field", "s")]).unwrap();
    assert!(
        SinkConfig::from_options(&both)
            .unwrap_err()
            .to_string()
            .contains("not both")
    );
    let none = parse(&[]).unwrap();
    assert!(
        SinkConfig::from_options(&none)
            .unwrap_err()
            .to_string()
            .contains("missing")
    );
}

#[test]
fn secrets_are_masked_in_debug_and_redacted_views() {
    let o = parse(&[
        ("username", "u"),
        ("password", "hunter2"),
        ("servers", "nats://h:4222"),
    ])
    .unwrap();
    let shown = format!("{o:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
    let cfg = ConnectionConfig::from_options(&o).unwrap();
    assert!(!format!("{cfg:?}").contains("hunter2"));
    // A URL with credentials that arrives through a variable is masked when shown.
    let o = parse(&[(
        "servers",
        "${STREAMSQL_TEST_UNSET_VAR_3:-nats://u:hunter3@h:4222}",
    )])
    .unwrap();
    assert!(!format!("{o:?}").contains("hunter3"));
}

#[test]
fn credentials_in_a_server_url_are_refused_without_echoing_them() {
    for servers in [
        "nats://u:hunter2@h:4222",
        "u:hunter2@h:4222",
        "nats://a:1,nats://u:hunter2@h:2",
    ] {
        let text = err(&[("servers", servers)]);
        assert!(text.contains("has credentials in its URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

#[test]
fn variables_resolve_when_the_connection_is_built() {
    let o = parse(&[
        ("username", "u"),
        ("password", "${STREAMSQL_TEST_UNSET_VAR_1}"),
    ])
    .unwrap();
    let e = ConnectionConfig::from_options(&o).unwrap_err().to_string();
    assert!(e.contains("'STREAMSQL_TEST_UNSET_VAR_1'"), "{e}");
    let o = parse(&[("connect_timeout", "${STREAMSQL_TEST_UNSET_VAR_2:-250ms}")]).unwrap();
    let cfg = ConnectionConfig::from_options(&o).unwrap();
    assert_eq!(cfg.connect_timeout, Duration::from_millis(250));
}
