//! Shutdown: the signals that ask for it, and the wait for the engine to finish its work.

use std::time::Duration;

use crate::engine::EngineHandle;

/// SIGTERM and SIGINT (Ctrl-C), listened to from startup on so that none is missed between
/// the first signal and the second.
pub(crate) struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    #[cfg(unix)]
    pub(crate) fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    pub(crate) fn listen() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// Waits for the next signal.
    #[cfg(unix)]
    pub(crate) async fn next(&mut self) {
        tokio::select! {
            Some(()) = self.terminate.recv() => {}
            Some(()) = self.interrupt.recv() => {}
            // Both streams ended (the runtime is going away): no signal will come.
            else => std::future::pending::<()>().await,
        }
    }

    #[cfg(not(unix))]
    pub(crate) async fn next(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Returns once the engine holds no request (or has died). The engine thread publishes its
/// counts as atomics, so they are polled.
pub(crate) async fn engine_idle(engine: &EngineHandle) {
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    loop {
        poll.tick().await;
        if engine.state().idle() || !engine.state().alive() {
            return;
        }
    }
}
