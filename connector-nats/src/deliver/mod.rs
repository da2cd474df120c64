//! Delivery: what each row becomes, publishing it, and confirming it.

pub(crate) mod core;
pub(crate) mod driver;
pub(crate) mod failure;
pub(crate) mod jetstream;
pub(crate) mod retry;
pub(crate) mod rows;
