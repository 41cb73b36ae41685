//! Runs the engine thread's body so that a panic is logged with its message and recorded in
//! [`EngineState`], instead of ending the thread silently: liveness and new requests then
//! report the failure.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use super::state::EngineState;

pub(crate) fn run_recording_panics(state: &EngineState, body: impl FnOnce()) {
    // Nothing touched by `body` is used after a panic: the worker is gone, the state only holds
    // atomics, so no broken invariant can be observed.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        let message = panic_message(payload.as_ref());
        tracing::error!("the engine thread panicked: {message}");
        state.set_failure(message);
        state.stopped.store(true, Ordering::SeqCst);
    }
}

/// The text a `panic!` carried (a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_recorded_with_its_message_and_stops_the_engine() {
        let state = EngineState::default();
        let count = 3;
        run_recording_panics(&state, || panic!("{count} blocks lost"));
        assert_eq!(state.failure(), Some("3 blocks lost"));
        assert!(state.stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_static_message_is_kept_and_a_clean_return_records_nothing() {
        let state = EngineState::default();
        run_recording_panics(&state, || {});
        assert!(state.failure().is_none());
        assert!(!state.stopped.load(Ordering::SeqCst));
        run_recording_panics(&state, || panic!("static"));
        assert_eq!(state.failure(), Some("static"));
    }
}
