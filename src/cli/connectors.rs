//! `streamsql connectors`: lists the registered connectors and their options as
//! aligned text tables, from the same declarations validation uses.

use std::process::ExitCode;

use crate::engine::Engine;
use crate::registry::{ENGINE_OPTIONS, OptionDoc, Registry, redact};

pub(super) fn run() -> Result<ExitCode, String> {
    let registry = Engine::builtin_registry();
    print!("{}", listing(&registry));
    Ok(ExitCode::SUCCESS)
}

/// The full listing: the engine keys once, then each connector with its options.
pub(crate) fn listing(registry: &Registry) -> String {
    let mut out = String::from("Keys every connector takes (read by the engine):\n");
    out.push_str(&table(ENGINE_OPTIONS));
    for connector in registry.iter() {
        out.push_str(&format!("\n{} ({})\n", connector.name(), connector.kind()));
        out.push_str(&table(&connector.options()));
    }
    out
}

/// The DEFAULT cell: `-` when there is none; a secret option's default is hidden by
/// the engine's one redaction rule.
fn shown_default(option: &OptionDoc) -> String {
    match option.default {
        None => "-".to_string(),
        Some(value) => redact([(option.name, value)], |_| option.secret)
            .pop()
            .map(|(_, shown)| shown)
            .unwrap_or_default(),
    }
}

/// One option table, columns padded to their widest cell.
fn table(options: &[OptionDoc]) -> String {
    let header = ["OPTION", "SCOPE", "DEFAULT", "SECRET", "DESCRIPTION"];
    let rows: Vec<[String; 5]> = options
        .iter()
        .map(|o| {
            [
                o.name.to_string(),
                o.scope.to_string(),
                shown_default(o),
                if o.secret { "yes" } else { "no" }.to_string(),
                o.doc.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_string);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::from(" ");
        for (i, cell) in row.iter().enumerate() {
            // The last column is not padded, so lines carry no trailing spaces.
            if i + 1 == row.len() {
                line.push(' ');
                line.push_str(cell);
            } else {
                line.push_str(&format!(" {cell:<width$}", width = widths[i]));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::OptionScope;

    #[test]
    fn lists_every_connector_and_option() {
        let text = listing(&Engine::builtin_registry());
        assert!(text.contains("\nnats_sink (sink)\n"), "{text}");
        assert!(text.contains("\ndatagen (source)\n"), "{text}");
        let password = text
            .lines()
            .find(|l| l.trim_start().starts_with("password "))
            .unwrap();
        assert!(
            password.contains("connection") && password.contains(" yes "),
            "{password}"
        );
        let rate = text
            .lines()
            .find(|l| l.trim_start().starts_with("rows_per_second "))
            .unwrap();
        assert!(
            rate.contains("table") && rate.contains("1000") && rate.contains(" no "),
            "{rate}"
        );
        // The engine keys are listed once, not repeated per connector.
        let connection_rows = text
            .lines()
            .filter(|l| l.trim_start().starts_with("connection "))
            .count();
        assert_eq!(connection_rows, 1, "{text}");
        assert!(text.lines().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn a_secret_default_is_never_listed() {
        let docs = [
            OptionDoc {
                name: "token",
                scope: OptionScope::Connection,
                default: Some("hunter2"),
                secret: true,
                doc: "a token",
            },
            OptionDoc {
                name: "servers",
                scope: OptionScope::Connection,
                default: Some("nats://127.0.0.1:4222"),
                secret: false,
                doc: "",
            },
        ];
        let text = table(&docs);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("***") && text.contains("nats://127.0.0.1:4222"),
            "{text}"
        );
    }
}
