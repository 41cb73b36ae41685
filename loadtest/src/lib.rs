//! `epas-loadtest`: a load generator and report for OpenAI-compatible streaming servers, with
//! EPAS sharing-ratio control. The binary is a thin wrapper around [`app::main_with`].

pub mod app;
pub mod args;
pub mod arrivals;
pub mod client;
pub mod error;
pub mod load;
pub mod outcome;
pub mod output;
pub mod pixel_font;
pub mod plot;
pub mod progress;
pub mod prom_text;
pub mod prompts;
pub mod report;
pub mod runner;
pub mod spec;
mod spec_table;
pub mod speculation;
pub mod sse;
pub mod stats;
pub mod table;
pub mod workload;
