//! nurture's integration tests: one binary, one module per area.

#![warn(unreachable_pub)]

mod util;

mod bench;
mod channel_kinds;
mod channel_limits;
mod check;
mod cli;
mod compact;
mod contact_semantics;
mod contacts;
mod dashboard;
mod durability;
mod email;
mod examples;
mod explain;
mod forms;
mod fuzz_smoke;
mod graph;
mod held_back;
mod ingest_formats;
mod invalid;
mod metrics;
mod openapi;
mod operate;
mod outcomes;
mod plugins;
mod privacy;
mod problem_json;
mod providers;
mod replay;
mod reports;
mod schema;
mod scoring_backtest;
mod sec_egress;
mod sec_lang;
mod sec_server;
mod sec_tokens;
mod segment_timers;
mod semantics_content;
mod simulate;
mod store;
mod store_errors;
mod tracking;
mod versions;
mod webdriver;
mod workspaces;
