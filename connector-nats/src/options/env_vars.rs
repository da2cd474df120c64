//! `${VAR}` and `${VAR:-default}` substitution in option values.
//!
//! Values are resolved from the process environment. An unset variable without a default
//! is an error naming the variable and the option; `$` not followed by `{` is kept as is,
//! so passwords containing `$` need no escaping.

use crate::error::{NatsSinkError, Result};

/// Resolves every `${...}` in `value`, reading variables through `lookup`.
pub(crate) fn resolve_with(
    option: &str,
    value: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| NatsSinkError::InvalidOption {
                option: option.to_string(),
                problem: "'${' without a closing '}': write ${VAR} or ${VAR:-default}".into(),
            })?;
        let body = &after[..end];
        let (var, default) = match body.split_once(":-") {
            Some((var, default)) => (var, Some(default)),
            None => (body, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            // The position, not the text: the value may be a secret.
            let at = value.len() - rest.len() + start;
            return Err(NatsSinkError::InvalidOption {
                option: option.to_string(),
                problem: format!(
                    "the '${{' at character {} does not start a variable reference: names use letters, digits and '_' (write ${{VAR}} or ${{VAR:-default}})",
                    value[..at].chars().count() + 1
                ),
            });
        }
        match (lookup(var), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(NatsSinkError::UnresolvedVariable {
                    option: option.to_string(),
                    var: var.to_string(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves `value` from the process environment.
pub(crate) fn resolve(option: &str, value: &str) -> Result<String> {
    resolve_with(option, value, |var| std::env::var(var).ok())
}

/// Checks the `${...}` syntax without reading the environment (for validation before the
/// variables need to exist).
pub(crate) fn check_syntax(option: &str, value: &str) -> Result<()> {
    resolve_with(option, value, |_| Some(String::new())).map(drop)
}

/// True when the value needs the environment to be known.
pub(crate) fn has_variables(value: &str) -> bool {
    value.contains("${")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        (var == "SET").then(|| "value".to_string())
    }

    #[test]
    fn substitutes_set_variables_and_keeps_the_rest() {
        assert_eq!(resolve_with("o", "a-${SET}-b", env).unwrap(), "a-value-b");
        assert_eq!(
            resolve_with("o", "${SET}${SET}", env).unwrap(),
            "valuevalue"
        );
        assert_eq!(resolve_with("o", "pa$$word", env).unwrap(), "pa$$word");
    }

    #[test]
    fn uses_the_default_only_when_unset() {
        assert_eq!(resolve_with("o", "${UNSET:-dflt}", env).unwrap(), "dflt");
        assert_eq!(resolve_with("o", "${SET:-dflt}", env).unwrap(), "value");
        assert_eq!(resolve_with("o", "${UNSET:-}", env).unwrap(), "");
    }

    #[test]
    fn unset_variable_names_the_variable_and_the_option() {
        let err = resolve_with("password", "${NATS_PASSWORD}", env).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("'NATS_PASSWORD'"), "{text}");
        assert!(text.contains("'password'"), "{text}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(resolve_with("o", "${SET", env).is_err());
        assert!(resolve_with("o", "${}", env).is_err());
        assert!(resolve_with("o", "${A B}", env).is_err());
        assert!(check_syntax("o", "${UNSET}").is_ok());
    }

    /// A password may contain `${`; an error must point at it without quoting the value.
    #[test]
    fn a_malformed_reference_is_located_not_quoted() {
        let text = check_syntax("password", "s3cr${x-y}et")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("the '${' at character 5 does not start"),
            "{text}"
        );
        assert!(!text.contains("x-y") && !text.contains("s3cr"), "{text}");
    }
}
