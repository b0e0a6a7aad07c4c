//! Waiting for the operating system to ask us to stop.

use std::{fmt, io};

use tokio::signal::unix::{SignalKind, signal};

/// The signal that asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// `SIGINT`, usually Ctrl-C.
    Interrupt,
    /// `SIGTERM`, what supervisors send.
    Terminate,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
        })
    }
}

/// Waits for `SIGINT` or `SIGTERM` and says which arrived.
///
/// The handlers are installed when this function is first polled, and stay installed for the
/// life of the process, so a second call catches a second signal.
///
/// # Errors
///
/// Fails if the signal handlers cannot be installed.
///
/// # Cancel safety
///
/// Cancel safe: dropping the future loses no signal that it did not already return.
pub async fn stop_signal() -> io::Result<StopSignal> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => Ok(StopSignal::Interrupt),
        _ = terminate.recv() => Ok(StopSignal::Terminate),
    }
}
