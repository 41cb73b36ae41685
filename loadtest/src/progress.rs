//! A one-line progress display on stderr, redrawn a few times a second while a run goes,
//! shown only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub output_tokens: AtomicU64,
}

pub struct Progress {
    pub counters: Arc<Counters>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing (when `enabled` and stderr is a terminal) for the run named `what`,
    /// which sends at most `total` requests when that is known.
    pub fn start(enabled: bool, what: String, total: Option<usize>) -> Self {
        let counters = Arc::new(Counters::default());
        let ticker = (enabled && std::io::stderr().is_terminal()).then(|| {
            let counters = counters.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let line = render(&what, total, &counters, start.elapsed().as_secs_f64());
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                }
            })
        });
        Progress { counters, ticker }
    }

    pub fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

fn render(what: &str, total: Option<usize>, c: &Counters, secs: f64) -> String {
    let done = c.completed.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed);
    let bar = match total {
        Some(total) if total > 0 => {
            let width = 24;
            let filled = (done as usize * width / total).min(width);
            format!(
                "[{}{}] {done}/{total}",
                "#".repeat(filled),
                "-".repeat(width - filled)
            )
        }
        _ => format!("{done} done"),
    };
    let tokens = c.output_tokens.load(Ordering::Relaxed) as f64;
    format!(
        "{what} {bar}, {} failed, {} running, {secs:.0} s, {:.0} output tok/s",
        c.failed.load(Ordering::Relaxed),
        c.sent.load(Ordering::Relaxed).saturating_sub(done),
        if secs > 0.0 { tokens / secs } else { 0.0 }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts() {
        let c = Counters::default();
        c.sent.store(5, Ordering::Relaxed);
        c.completed.store(3, Ordering::Relaxed);
        c.failed.store(1, Ordering::Relaxed);
        c.output_tokens.store(100, Ordering::Relaxed);
        let line = render("c=4", Some(8), &c, 2.0);
        assert_eq!(
            line,
            "c=4 [############------------] 4/8, 1 failed, 1 running, 2 s, 50 output tok/s"
        );
    }
}
