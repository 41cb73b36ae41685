//! `epas-loadtest`: the load generator for OpenAI-compatible servers. Not built yet; the HTTP
//! server it measures comes first.

fn main() -> std::process::ExitCode {
    eprintln!("epas-loadtest is not available in this version yet");
    std::process::ExitCode::from(2)
}
