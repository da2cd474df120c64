//! The integration tests of `connector-nats`, in one test binary: each file here is a
//! module (`cargo test -p connector-nats --test it <module>::` runs one of them), so
//! DataFusion is linked once for both.

mod bare_datafusion;
mod json_types;
