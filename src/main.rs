//! `epas`: generate, evaluate (and later serve and train) EPAS LLaMA models.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(args.log_json);
    if let Some(threads) = args.threads {
        cli::set_threads(threads);
    }
    match cli::run(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
