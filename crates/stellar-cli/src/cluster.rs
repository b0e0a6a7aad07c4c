//! `stellar cluster …`: a short-lived [`Client`] of a running cluster. It talks on the bus under
//! its own id (`stellar-client-<host>-<pid>`) but never joins the membership.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use stellar_bus::{Bus, Membership, NodeInfo};
use stellar_core::{Config, NodeId};
use stellar_node::Client;
use stellar_rpc::{Reply, Rpc, Target, Wait};

use crate::cli::{ClusterCommand, DoArgs, WaitArg};

/// Runs one cluster command against the configured Redis.
pub(crate) async fn run(config: Config, command: ClusterCommand) -> Result<()> {
    let client = Client::connect(config, &[])
        .await
        .context("`stellar cluster` connects to the cluster")?;
    let result = match command {
        ClusterCommand::Status { json } => status(client.rpc(), json).await,
        ClusterCommand::Do(args) => call(client.rpc(), args).await,
        ClusterCommand::Publish { message_type, body } => {
            publish(client.bus(), &message_type, &body).await
        }
    };
    client.close().await;
    result
}

/// The live nodes that verify with this client's token, and how many membership records did not.
async fn live_nodes(membership: &Membership) -> Result<(Vec<NodeInfo>, u64)> {
    let before = membership.stats().bad_signature;
    let nodes = membership
        .nodes()
        .await
        .context("listing the cluster's nodes")?;
    let foreign = membership.stats().bad_signature.saturating_sub(before);
    Ok((nodes, foreign))
}

/// Fails when `foreign` membership records did not verify: a wrong token must not look like an
/// empty (or smaller) cluster.
fn check_foreign(foreign: u64) -> Result<()> {
    match foreign {
        0 => Ok(()),
        1 => bail!(
            "1 node record is signed with another token: set --server-token or \
             STELLAR_SERVER_TOKEN to the cluster's token"
        ),
        n => bail!(
            "{n} node records are signed with another token: set --server-token or \
             STELLAR_SERVER_TOKEN to the cluster's token"
        ),
    }
}

async fn status(rpc: &Rpc, as_json: bool) -> Result<()> {
    let (nodes, foreign) = live_nodes(rpc.membership()).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return check_foreign(foreign);
    }
    println!(
        "{:<28} {:<20} {:>8} {:>10} {:>10} {:<8}",
        "ID", "HOST", "PID", "UPTIME", "SEEN", "VERSION"
    );
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for NodeInfo {
        id,
        host,
        pid,
        started_at_ms,
        last_seen_ms,
        version,
        ..
    } in &nodes
    {
        let uptime = format!("{}s", now.saturating_sub(*started_at_ms) / 1000);
        let seen = format!("{}ms ago", now.saturating_sub(*last_seen_ms));
        println!("{id:<28} {host:<20} {pid:>8} {uptime:>10} {seen:>10} {version:<8}");
    }
    println!("{} node(s)", nodes.len());
    check_foreign(foreign)
}

async fn call(rpc: &Rpc, args: DoArgs) -> Result<()> {
    let mut call_args: Value = match &args.args {
        Some(text) => {
            serde_json::from_str(text).with_context(|| format!("ARGS_JSON is not JSON: {text}"))?
        }
        None => Value::Null,
    };
    // A method aimed at a connection learns which one from its arguments (the RPC target only
    // routes the call to the node holding it): `--connection ID` fills `connection_id` in.
    if let (Some(connection), Value::Object(fields)) = (&args.connection, &mut call_args) {
        match fields.get("connection_id") {
            None => {
                fields.insert("connection_id".into(), Value::String(connection.clone()));
            }
            Some(Value::String(named)) if named == connection => {}
            Some(other) => bail!(
                "ARGS_JSON names connection_id {other} but --connection is {connection:?}: the call \
                 would reach one connection's node and act on another"
            ),
        }
    }
    let target = match (&args.node, &args.connection) {
        (Some(node), _) => Target::Node(NodeId::new(node.as_str())?),
        (None, Some(connection)) => Target::Connection(connection.clone()),
        (None, None) => Target::All,
    };
    let wait = match args.wait {
        WaitArg::None => Wait::None,
        WaitArg::First => Wait::First,
        WaitArg::All => Wait::All,
    };
    let (nodes, foreign) = live_nodes(rpc.membership()).await?;
    if nodes.is_empty() {
        check_foreign(foreign)?;
        bail!("no live nodes");
    }
    let timeout = args.timeout.map(Duration::from_millis);
    let replies = rpc
        .do_cluster(&args.method, call_args, target, wait, timeout)
        .await?;
    print_replies(&replies, args.json)?;
    if wait == Wait::None {
        eprintln!("sent {} (no reply awaited)", args.method);
    }
    let failed = replies.iter().filter(|reply| reply.result.is_err()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} node(s) answered {} with an error or not at all",
            replies.len(),
            args.method
        );
    }
    check_foreign(foreign)
}

fn print_replies(replies: &[Reply], as_json: bool) -> Result<()> {
    if as_json {
        let rows: Vec<Value> = replies
            .iter()
            .map(|reply| match &reply.result {
                Ok(value) => json!({ "node_id": reply.node_id, "ok": value }),
                Err(err) => json!({ "node_id": reply.node_id, "error": err.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for reply in replies {
        match &reply.result {
            Ok(value) => println!("{}: {value}", reply.node_id),
            Err(err) => println!("{}: error: {err}", reply.node_id),
        }
    }
    Ok(())
}

async fn publish(bus: &Bus, message_type: &str, body: &str) -> Result<()> {
    let body: Value =
        serde_json::from_str(body).with_context(|| format!("BODY_JSON is not JSON: {body}"))?;
    bus.publish(message_type, &body).await?;
    eprintln!("published {message_type}");
    Ok(())
}
