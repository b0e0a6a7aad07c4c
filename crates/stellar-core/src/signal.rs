//! Waiting for the operating system to ask us to stop.

use std::{fmt, io};

use tokio::signal::unix::{Signal, SignalKind, signal};

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

/// Handlers for `SIGINT` and `SIGTERM`.
///
/// Install them before announcing readiness: from then on a stop signal is caught instead of
/// killing the process outright.
#[derive(Debug)]
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Installs the handlers. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// Fails if the operating system refuses the handlers.
    pub fn install() -> io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next `SIGINT` or `SIGTERM` and says which arrived.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal not returned stays pending for the next call.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}
