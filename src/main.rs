//! `epas`: generate, evaluate (and later serve and train) EPAS LLaMA models.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// candle allocates a fresh buffer for every op. By default glibc serves large buffers with
/// `mmap` and returns them on free, so the kernel zeroes every page again on the next use: a
/// fifth to a third of a training step went to `clear_page`. Keeping freed memory in the heap
/// avoids that; the heap's peak is the same.
fn keep_freed_memory() {
    // SAFETY: mallopt only changes glibc malloc tunables; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
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
