//! nurture's integration tests: one binary, one module per area.

mod util;

mod bench;
mod contacts;
mod durability;
mod examples;
mod fuzz_smoke;
mod graph;
mod invalid;
mod schema;
mod simulate;
mod store;
