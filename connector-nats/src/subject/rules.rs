//! The part of the subject space a sink may publish to.
//!
//! When subjects come from a column, whoever controls the data controls where messages
//! go. A row must not reach the server's own API (`$JS.API.STREAM.DELETE...`), system
//! events (`$SYS.`), key-value and object stores (`$KV.`, `$O.`) or another client's
//! replies (`_INBOX.`), and `subject_prefix` can pen rows into one part of the space.
//! The rules apply to each row's subject, from a column or fixed. Reply subjects get the
//! system-subject rule without `_INBOX.` (a reply subject is normally an inbox): a
//! responder with broad permissions must not be made to answer into `$JS.API...`.

/// What a sink's row subjects must satisfy, beyond being valid subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRules {
    /// `allow_system_subjects`.
    pub allow_system: bool,
    /// `subject_prefix`, ending in `.`.
    pub prefix: Option<String>,
    /// `_INBOX.` subjects pass (for reply subjects).
    pub allow_inbox: bool,
}

impl SubjectRules {
    /// The rules for reply subjects: inboxes allowed, no prefix.
    pub fn for_replies(&self) -> SubjectRules {
        SubjectRules {
            allow_system: self.allow_system,
            prefix: None,
            allow_inbox: true,
        }
    }

    /// Why `subject`, a valid subject, may not be published to: a phrase that follows
    /// "the subject ..." in an error.
    pub fn check(&self, subject: &str) -> Result<(), String> {
        if let Some(prefix) = &self.prefix
            && !subject.starts_with(prefix.as_str())
        {
            return Err(format!(
                "is outside subject_prefix '{prefix}'; only subjects starting with it may be published to"
            ));
        }
        let inbox = subject.split('.').next() == Some("_INBOX");
        if !self.allow_system && is_system(subject) && !(self.allow_inbox && inbox) {
            return Err(
                "is a system or internal subject (its first token starts with '$' or is '_INBOX'); rows may use it only with allow_system_subjects = 'true'"
                    .into(),
            );
        }
        Ok(())
    }
}

/// True for subjects owned by the server or by client plumbing: `$JS.`, `$SYS.`, `$KV.`,
/// `$O.`, `$G.`, `$MQTT.` and any other first token starting with `$`, and `_INBOX.`.
pub fn is_system(subject: &str) -> bool {
    let first = subject.split('.').next().unwrap_or_default();
    first.starts_with('$') || first == "_INBOX"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_and_internal_subjects_are_refused_by_default() {
        let rules = SubjectRules::default();
        for subject in [
            "$JS.API.STREAM.DELETE.ORDERS",
            "$SYS.REQ.SERVER.PING",
            "$KV.config.key",
            "$O.files.chunk",
            "_INBOX.abc.1",
            "$G",
        ] {
            let problem = rules.check(subject).unwrap_err();
            assert!(
                problem.contains("allow_system_subjects"),
                "{subject}: {problem}"
            );
        }
        for subject in ["orders.eu", "JS.API", "inbox._INBOX", "a.$JS", "_INBOXES.x"] {
            assert_eq!(rules.check(subject), Ok(()), "{subject}");
        }
    }

    #[test]
    fn allow_system_subjects_lets_them_through() {
        let rules = SubjectRules {
            allow_system: true,
            ..SubjectRules::default()
        };
        assert_eq!(rules.check("$KV.config.key"), Ok(()));
    }

    #[test]
    fn a_prefix_covers_whole_tokens_only() {
        let rules = SubjectRules {
            prefix: Some("orders.".into()),
            ..SubjectRules::default()
        };
        assert_eq!(rules.check("orders.eu"), Ok(()));
        assert_eq!(rules.check("orders.eu.paris"), Ok(()));
        for subject in ["ordersX.eu", "orders", "payments.eu", "$JS.API.orders."] {
            let problem = rules.check(subject).unwrap_err();
            assert!(
                problem.contains("outside subject_prefix 'orders.'"),
                "{problem}"
            );
        }
    }

    #[test]
    fn reply_subjects_may_be_inboxes_but_not_system_subjects_nor_need_the_prefix() {
        let rules = SubjectRules {
            allow_system: false,
            prefix: Some("orders.".into()),
            allow_inbox: false,
        }
        .for_replies();
        assert_eq!(rules.check("_INBOX.abc.1"), Ok(()));
        assert_eq!(rules.check("replies.eu"), Ok(()));
        assert!(rules.check("$JS.API.STREAM.DELETE.ORDERS").is_err());
    }

    #[test]
    fn a_system_prefix_still_needs_allow_system_subjects() {
        let rules = SubjectRules {
            prefix: Some("$KV.config.".into()),
            ..SubjectRules::default()
        };
        assert!(rules.check("$KV.config.a").is_err());
        let rules = SubjectRules {
            allow_system: true,
            ..rules
        };
        assert_eq!(rules.check("$KV.config.a"), Ok(()));
    }
}
