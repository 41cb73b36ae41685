//! `epas-loadtest`: see `epas-loadtest --help` and the README's "Load testing" section.
//! Exit status: 0 measured, 1 error, 2 bad flags, 3 no request completed, 130 interrupted.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = epas_loadtest::args::Args::parse();
    match epas_loadtest::app::main_with(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
