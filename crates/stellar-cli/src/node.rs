//! `stellar run`: one node, from start to a graceful stop.

use anyhow::{Context, Result};
use stellar_core::{Api, Config, StopSignals};
use stellar_node::{Node, NodeBuilder, SetupHook};
use stellar_tasks::TaskDefinition;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    app::{EXIT_FORCED, Setup},
    control::{self, Control},
};

/// Starts a node, waits for a stop signal (or a stop from inside), and stops it gracefully.
///
/// Under a supervisor ([`control::SOCKET_ENV`] set) the node reports to it, stops when it goes
/// away, and treats a repeated SIGINT/SIGTERM as the same request: only SIGQUIT, which the
/// supervisor sends when its operator insists, forces it out. Run alone, a second SIGINT/SIGTERM
/// forces it out.
pub(crate) async fn run(
    config: Config,
    setups: &[Setup],
    definitions: &[TaskDefinition],
    actions: &[stellar_node::Action],
) -> Result<()> {
    config.check_shared_backend()?;
    let builder = builder(config, setups, definitions, actions)?;
    let api = builder.api().clone();
    let incarnation = api.incarnation();
    let mut control = Control::connect(api.node_id().as_str(), incarnation).await?;
    // Installed before the supervisor could ever send it, so it never dumps core.
    let quit = match control {
        Some(_) => Some(signal(SignalKind::quit()).context("installing the SIGQUIT handler")?),
        None => None,
    };
    if let Some(control) = &mut control {
        control.stop_when_supervisor_exits(&api);
    }
    register_restarts_gauge(&api);
    let mut signals = StopSignals::install().context("installing signal handlers")?;
    // A stop signal (or a dead supervisor) during start-up abandons the start-up: there is
    // nothing to drain yet.
    let node = tokio::select! {
        node = builder.start() => node.context("starting the node")?,
        signal = signals.recv() => return abandon_start(&api, &signal.to_string()).await,
        () = api.stop_requested() => return abandon_start(&api, "stop requested").await,
    };
    let backend = if node.is_shared() { "redis" } else { "memory" };
    info!(node_id = %api.node_id(), backend, pid = std::process::id(), incarnation, "node ready");
    if let Some(control) = &mut control
        && let Err(err) = control.ready().await
    {
        // The supervisor is gone: the watcher on its socket stops this node.
        warn!(node_id = %api.node_id(), error = %err, "could not report readiness to the supervisor");
    }

    let reason = tokio::select! {
        signal = signals.recv() => signal.to_string(),
        () = api.stop_requested() => "stop requested".to_owned(),
    };
    info!(node_id = %api.node_id(), %reason, timeout_ms = api.config().shutdown_timeout.as_millis() as u64, "shutdown begun");
    tokio::spawn(force_on(signals, quit));
    node.shutdown().await.context("graceful shutdown")?;
    // Held until here: the supervisor sees the connection close when the node has stopped.
    drop(control);
    Ok(())
}

/// The node's builder: this process's configuration, tasks, actions and set-up hooks, and the
/// HTTP listener a supervisor handed down.
fn builder(
    config: Config,
    setups: &[Setup],
    definitions: &[TaskDefinition],
    actions: &[stellar_node::Action],
) -> Result<NodeBuilder> {
    let replaces = replaced_incarnation(std::env::var(REPLACES_INCARNATION).ok())?;
    let mut builder = Node::builder(config)
        .tasks(definitions.iter().cloned())
        .replaces(replaces);
    for action in actions {
        builder = builder.action(action.clone());
    }
    if std::env::var(control::LISTENER_ENV).as_deref() == Ok("stdin") {
        builder = builder.http_listener(inherited_listener()?);
    }
    for setup in setups {
        let setup = setup.clone();
        let hook: SetupHook = Box::new(move |node: &Node| setup(node).map_err(Into::into));
        builder = builder.setup(hook);
    }
    Ok(builder)
}

/// Stops a node whose start-up was interrupted (`reason`): there is nothing to drain yet.
async fn abandon_start(api: &Api, reason: &str) -> Result<()> {
    info!(node_id = %api.node_id(), %reason, "stopped during start-up");
    let _ = api.shutdown().await;
    Ok(())
}

/// Exits at once on the signal that means "stop now": SIGQUIT under a supervisor (a repeated
/// SIGTERM is then the same request again, as when systemd signals every process of the group
/// and the supervisor forwards its own), a second SIGINT/SIGTERM otherwise.
async fn force_on(mut signals: StopSignals, quit: Option<Signal>) {
    let Some(mut quit) = quit else {
        let signal = signals.recv().await;
        error!(%signal, "second signal during shutdown, exiting now");
        std::process::exit(i32::from(EXIT_FORCED));
    };
    loop {
        tokio::select! {
            signal = signals.recv() => {
                info!(%signal, "already stopping; a supervised worker is forced out only by SIGQUIT");
            }
            _ = quit.recv() => {
                error!("SIGQUIT from the supervisor during shutdown, exiting now");
                std::process::exit(i32::from(EXIT_FORCED));
            }
        }
    }
}

/// The HTTP listener the supervisor handed down as this process's standard input (one socket
/// for every worker of the cluster).
fn inherited_listener() -> Result<std::net::TcpListener> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("taking the HTTP listener handed down on standard input")?;
    let listener = std::net::TcpListener::from(fd);
    listener
        .local_addr()
        .context("standard input is not the listening socket the supervisor should hand down")?;
    // Standard input becomes /dev/null again: a program the app starts must not inherit (and
    // hold open) the cluster's listening socket.
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("replacing standard input with /dev/null")?;
    Ok(listener)
}

/// Reports how often the supervisor had to restart this worker's slot, so a crash loop shows in
/// `api.status` (`gauges.supervisor_restarts`).
fn register_restarts_gauge(api: &Api) {
    let restarts = std::env::var(control::RESTARTS_ENV)
        .ok()
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(restarts) = restarts {
        api.register_gauge("supervisor_restarts", move || restarts);
    }
}

/// Names the incarnation of a live run of this node id that this run takes over (a supervised
/// handover; see `Membership::join_replacing`). Without it, a live run under the same id makes
/// start-up fail.
const REPLACES_INCARNATION: &str = "STELLAR_REPLACES_INCARNATION";

/// The incarnation named by [`REPLACES_INCARNATION`]: decimal, or hex with `0x`; unset or
/// empty is none.
fn replaced_incarnation(value: Option<String>) -> Result<Option<u64>> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    };
    parsed
        .map(Some)
        .with_context(|| format!("{REPLACES_INCARNATION}={value:?} is not an incarnation (a u64)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replaced_incarnation_is_decimal_or_hex() {
        assert_eq!(replaced_incarnation(None).expect("unset"), None);
        assert_eq!(replaced_incarnation(Some(" ".into())).expect("empty"), None);
        assert_eq!(
            replaced_incarnation(Some("18446744073709551615".into())).expect("decimal"),
            Some(u64::MAX)
        );
        assert_eq!(
            replaced_incarnation(Some("0x2a".into())).expect("hex"),
            Some(42)
        );
        let err = replaced_incarnation(Some("worker-1".into())).expect_err("not a number");
        assert!(
            err.to_string().contains("STELLAR_REPLACES_INCARNATION"),
            "{err}"
        );
    }
}
