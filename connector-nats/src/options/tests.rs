//! One test per option rule.

use super::*;
use crate::options::config::{ConnectionConfig, SinkConfig};
use crate::options::values::{parse_headers, parse_servers};

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
fn conflicting_auth_methods_name_both_options() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[("token", "t"), ("username", "u"), ("password", "p")],
            "token",
            "username",
        ),
        (
            &[("credentials_file", "/c"), ("token", "t")],
            "credentials_file",
            "token",
        ),
        (
            &[("credentials_file", "/c"), ("nkey_seed", "SU")],
            "nkey_seed",
            "credentials_file",
        ),
        (
            &[("credentials_file", "/c"), ("jwt", "j")],
            "jwt",
            "credentials_file",
        ),
        (
            &[
                ("nkey_seed_file", "/s"),
                ("username", "u"),
                ("password", "p"),
            ],
            "nkey_seed_file",
            "username",
        ),
        (
            &[("nkey_seed", "SU"), ("nkey_seed_file", "/s")],
            "nkey_seed_file",
            "nkey_seed",
        ),
    ];
    for (pairs, one, other) in cases {
        let text = err(pairs);
        assert!(
            text.contains(&format!(
                "option '{one}': cannot be combined with '{other}'"
            )),
            "{pairs:?}: {text}"
        );
    }
}

#[test]
fn auth_options_that_need_a_partner_say_which() {
    assert!(err(&[("username", "u")]).contains("option 'password': missing: 'username' needs it"));
    assert!(err(&[("password", "p")]).contains("option 'username': missing"));
    assert!(err(&[("jwt", "j")]).contains("option 'jwt': needs 'nkey_seed' or 'nkey_seed_file'"));
    for pairs in [
        &[("nkey_seed", "SU")][..],
        &[("nkey_seed", "SU"), ("jwt", "j")],
        &[("nkey_seed_file", "/s"), ("jwt", "j")],
        &[("credentials_file", "/c")],
    ] {
        assert!(parse(pairs).is_ok(), "{pairs:?}");
    }
}

#[test]
fn tls_settings_are_checked_together() {
    assert!(
        err(&[("tls_cert_file", "/c")])
            .contains("option 'tls_key_file': missing: 'tls_cert_file' needs it")
    );
    assert!(err(&[("tls_key_file", "/k")]).contains("option 'tls_cert_file': missing"));
    for setting in ["tls_ca_file", "tls_first"] {
        let value = if setting == "tls_first" {
            "true"
        } else {
            "/ca.pem"
        };
        let text = err(&[("tls", "false"), (setting, value)]);
        assert!(
            text.contains(&format!(
                "option '{setting}': cannot be combined with tls = 'false'"
            )),
            "{text}"
        );
    }
    assert!(parse(&[("tls", "false"), ("tls_first", "false")]).is_ok());
    // Decided by a variable: checked once it is resolved.
    let deferred = parse(&[
        ("tls", "${STREAMSQL_TEST_UNSET_TLS:-false}"),
        ("tls_ca_file", "/ca.pem"),
    ])
    .unwrap();
    let text = ConnectionConfig::from_options(&deferred)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("option 'tls_ca_file': cannot be combined with tls = 'false'"),
        "{text}"
    );
    let deferred = parse(&[
        ("tls", "false"),
        ("tls_first", "${STREAMSQL_TEST_UNSET_TF:-false}"),
    ])
    .unwrap();
    assert!(!ConnectionConfig::from_options(&deferred).unwrap().tls.first);
    assert!(err(&[("tls_ca_file", " ")]).contains("give the path of a file"));
}

#[test]
fn any_tls_setting_or_tls_url_requires_tls() {
    let cfg = |pairs: &[(&str, &str)]| {
        ConnectionConfig::from_options(&parse(pairs).unwrap())
            .unwrap()
            .tls
    };
    assert!(!cfg(&[]).required);
    assert!(cfg(&[("tls", "true")]).required);
    assert!(cfg(&[("tls_ca_file", "/ca.pem")]).required);
    assert!(cfg(&[("tls_cert_file", "/c"), ("tls_key_file", "/k")]).required);
    let first = cfg(&[("tls_first", "true")]);
    assert!(first.required && first.first);
    // TLS from one URL holds for every connection of the sink, to any server.
    assert!(cfg(&[("servers", "nats://a:4222,tls://b:4222")]).required);
    assert!(cfg(&[("servers", "TLS://b:4222")]).required);
    assert!(cfg(&[("servers", "[\"wss://b:443\"]")]).required);
    assert!(!cfg(&[("servers", "nats://a:4222,b:4222")]).required);
    // As the option's doc says, `tls = 'false'` does not take a tls:// URL's TLS away.
    assert!(cfg(&[("servers", "tls://b:4222"), ("tls", "false")]).required);
}

#[test]
fn subject_prefix_must_end_with_a_dot_and_be_valid_tokens() {
    assert!(err(&[("subject_prefix", "orders")]).contains("must end with '.'"));
    assert!(err(&[("subject_prefix", "orders.*.")]).contains("not a valid subject prefix"));
    assert!(err(&[("subject_prefix", ".")]).contains("not a valid subject prefix"));
    assert!(parse(&[("subject_prefix", "tenant.a.")]).is_ok());
}

#[test]
fn a_fixed_subject_follows_the_subject_rules() {
    let config = |pairs: &[(&str, &str)]| SinkConfig::from_options(&parse(pairs).unwrap());
    let text = config(&[("subject", "$JS.API.STREAM.DELETE.X")])
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("option 'subject': '$JS.API.STREAM.DELETE.X' is a system"),
        "{text}"
    );
    assert!(config(&[("subject", "$KV.cfg.a"), ("allow_system_subjects", "true")]).is_ok());
    let text = config(&[("subject", "payments.x"), ("subject_prefix", "orders.")])
        .unwrap_err()
        .to_string();
    assert!(text.contains("outside subject_prefix 'orders.'"), "{text}");
}

/// The stream name reaches JetStream API subjects and the `Nats-Expected-Stream` header:
/// a line break (which async-nats cannot put in a header) or any other whitespace is
/// refused when the sink is created, as are the characters NATS reserves.
#[test]
fn a_stream_name_holds_no_whitespace_control_or_reserved_characters() {
    let config = |stream: &str| {
        SinkConfig::from_options(
            &parse(&[
                ("subject", "orders.a"),
                ("stream", stream),
                ("expected_stream", stream),
            ])
            .unwrap(),
        )
    };
    for bad in [
        "ORDERS\r\n",
        "OR\nDERS",
        "a b",
        "a\tb",
        "a\u{b}b",
        "a\u{0}",
        "a.b",
        "a*",
        "a>",
        "a/b",
        "a\\b",
        "a\u{2028}b",
        "",
    ] {
        let text = config(bad).unwrap_err().to_string();
        assert!(text.contains("is not a stream name"), "{bad:?}: {text}");
        assert!(
            !text.contains(['\r', '\n']),
            "the error is one line: {text}"
        );
    }
    assert!(config("ORDERS-eu_1").is_ok());
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
    for (option, secret) in [
        ("token", "t0k3n"),
        ("nkey_seed", "SUs33d"),
        ("jwt", "eyJ.j.w"),
    ] {
        let mut pairs = vec![(option, secret)];
        if option == "jwt" {
            pairs.push(("nkey_seed_file", "/seed"));
        }
        let o = parse(&pairs).unwrap();
        let cfg = ConnectionConfig::from_options(&o).unwrap();
        for shown in [
            format!("{o:?}"),
            format!("{cfg:?}"),
            format!("{:?}", o.redacted()),
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
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

/// `max_in_flight_bytes` takes a size with or without a unit, defaults to 64 MiB, and
/// refuses what is no size or out of range, naming the option and what to write; the
/// window's options are refused where no window applies (core, exactly_once).
#[test]
fn the_window_limits_are_read_with_units_and_refused_where_no_window_applies() {
    let window = |pairs: &[(&str, &str)]| {
        let mut pairs = pairs.to_vec();
        pairs.extend([("subject", "orders.a"), ("stream", "ORDERS")]);
        match SinkConfig::from_options(&parse(&pairs).unwrap())
            .unwrap()
            .mode
        {
            config::Mode::JetStream(js) => js.max_in_flight_bytes,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(window(&[]), 64 << 20);
    assert_eq!(window(&[("max_in_flight_bytes", "512KiB")]), 512 << 10);
    assert_eq!(window(&[("max_in_flight_bytes", " 2 MB ")]), 2_000_000);
    assert_eq!(window(&[("max_in_flight_bytes", "65536")]), 65536);
    let text = err(&[("max_in_flight_bytes", "lots")]);
    assert!(
        text.contains("option 'max_in_flight_bytes': 'lots' is not a size")
            && text.contains("'64MiB'"),
        "{text}"
    );
    let text = err(&[("max_in_flight_bytes", "8GiB")]);
    assert!(text.contains("give a size from 1 to 4GiB"), "{text}");
    assert!(err(&[("max_in_flight_bytes", "0")]).contains("is 0 bytes"));
    // Given where no window applies: refused, not ignored.
    let refused = |pairs: &[(&str, &str)]| {
        SinkConfig::from_options(&parse(pairs).unwrap())
            .unwrap_err()
            .to_string()
    };
    let core = refused(&[("subject", "a"), ("max_in_flight_bytes", "1MiB")]);
    assert!(
        core.contains("option 'max_in_flight_bytes': applies to JetStream only"),
        "{core}"
    );
    for option in ["max_in_flight", "max_in_flight_bytes"] {
        let atomic = refused(&[
            ("subject", "a"),
            ("stream", "S"),
            ("msg_id_field", "id"),
            ("delivery", "exactly_once"),
            (option, "1024"),
        ]);
        assert!(
            atomic.contains(&format!(
                "option '{option}': does not apply to delivery = 'exactly_once'"
            )),
            "{atomic}"
        );
    }
}
