//! The checks made at the start on the bucket's stream: that it is a key-value bucket
//! this sink can write, and otherwise what to do.

use async_nats::jetstream::stream::Config;

use crate::kv::keys;
use crate::kv::options::KeySpec;

/// What the error says when the bucket's stream does not exist.
pub(crate) fn missing(spec: &KeySpec) -> String {
    let bucket = &spec.bucket;
    format!(
        "key-value bucket '{bucket}' does not exist: create it first (for example `nats kv add {bucket}`), or fix 'bucket'"
    )
}

/// Why the stream `config` (named `KV_<bucket>`) cannot be written as bucket `spec`, or
/// `Ok` when it can.
pub(crate) fn check(config: &Config, spec: &KeySpec) -> Result<(), String> {
    let bucket = &spec.bucket;
    // What async-nats checks when it opens a bucket (`get_key_value`).
    if config.max_messages_per_subject < 1 {
        return Err(format!(
            "stream 'KV_{bucket}' is not a key-value bucket (it keeps no history per subject): create the bucket with `nats kv add {bucket}`"
        ));
    }
    let keys = format!("{}>", keys::prefix(bucket));
    if !config.subjects.contains(&keys) {
        if let Some(origin) = &config.mirror {
            return Err(format!(
                "key-value bucket '{bucket}' mirrors '{}' and takes no writes: write to that bucket instead",
                origin.name.trim_start_matches("KV_")
            ));
        }
        return Err(format!(
            "stream 'KV_{bucket}' does not capture '{keys}' (its subjects: {}), so it is not the stream of a key-value bucket: create the bucket with `nats kv add {bucket}`",
            config.subjects.join(", ")
        ));
    }
    // A purge asks the stream to drop the key's earlier revisions (a rollup); buckets
    // made by the NATS tools allow it.
    if let Some(column) = &spec.op_column
        && !config.allow_rollup
    {
        return Err(format!(
            "stream 'KV_{bucket}' does not allow rollups, which a 'purge' in column '{column}' (op_field) needs: allow them (`nats stream edit KV_{bucket} --allow-rollup`), or create the bucket with `nats kv add {bucket}`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(op: Option<&str>) -> KeySpec {
        KeySpec {
            bucket: "b".into(),
            column: "k".into(),
            op_column: op.map(String::from),
        }
    }

    fn bucket_config() -> Config {
        Config {
            name: "KV_b".into(),
            subjects: vec!["$KV.b.>".into()],
            max_messages_per_subject: 1,
            allow_rollup: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_bucket_made_by_the_tools_passes() {
        assert_eq!(check(&bucket_config(), &spec(Some("op"))), Ok(()));
    }

    #[test]
    fn each_problem_says_what_to_do() {
        let no_history = Config {
            max_messages_per_subject: 0,
            ..bucket_config()
        };
        assert!(
            check(&no_history, &spec(None))
                .unwrap_err()
                .contains("nats kv add b")
        );
        let other_subjects = Config {
            subjects: vec!["orders.>".into()],
            ..bucket_config()
        };
        let problem = check(&other_subjects, &spec(None)).unwrap_err();
        assert!(
            problem.contains("'$KV.b.>'") && problem.contains("orders.>"),
            "{problem}"
        );
        let no_rollup = Config {
            allow_rollup: false,
            ..bucket_config()
        };
        assert_eq!(
            check(&no_rollup, &spec(None)),
            Ok(()),
            "only purges need rollups"
        );
        let problem = check(&no_rollup, &spec(Some("op"))).unwrap_err();
        assert!(
            problem.contains("--allow-rollup") && problem.contains("'op'"),
            "{problem}"
        );
        assert!(missing(&spec(None)).contains("`nats kv add b`"));
    }
}
