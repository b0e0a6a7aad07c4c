//! `stellar cluster …`: a short-lived [`Client`] of a running cluster. It talks on the bus under
//! its own id (`stellar-client-<host>-<pid>`) but never joins the membership.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use stellar_bus::{Bus, Membership, NodeInfo};
use stellar_core::{Config, NodeId};
use stellar_node::Client;
use stellar_rpc::{Reply, Rpc, Target, Wait};

use crate::{
    app::client_error,
    cli::{ClusterCommand, DoArgs, WaitArg},
    output::{self, Table, line},
    tasks_cmd,
};

/// Runs one cluster command against the configured Redis.
pub(crate) async fn run(config: Config, command: ClusterCommand) -> Result<()> {
    let client = Client::connect(config, &[]).await.map_err(client_error)?;
    let result = match command {
        ClusterCommand::Status { json } => status(client.rpc(), json).await,
        ClusterCommand::Do(args) => call(client.rpc(), args).await,
        ClusterCommand::Quiet { node, undo } => quiet(client.rpc(), &node, !undo).await,
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
    let records = match foreign {
        0 => return Ok(()),
        1 => "1 node record is".to_owned(),
        n => format!("{n} node records are"),
    };
    bail!(
        "{records} signed with another token: set --server-token or STELLAR_SERVER_TOKEN to the \
         cluster's token"
    )
}

async fn status(rpc: &Rpc, as_json: bool) -> Result<()> {
    let (nodes, foreign) = live_nodes(rpc.membership()).await?;
    if as_json {
        output::json(&nodes)?;
        return check_foreign(foreign);
    }
    let now = stellar_core::time::now_ms();
    let mut table =
        Table::new(&["ID", "HOST", "PID", "UPTIME", "SEEN", "VERSION"]).right(&[2, 3, 4]);
    for node in &nodes {
        let uptime = now.saturating_sub(node.started_at_ms) / 1000 * 1000;
        table.row(vec![
            node.id.to_string(),
            node.host.clone(),
            node.pid.to_string(),
            output::duration_ms(Some(uptime)),
            format!("{}ms ago", now.saturating_sub(node.last_seen_ms)),
            node.version.clone(),
        ]);
    }
    table.print();
    line(&format!("{} node(s)", nodes.len()));
    check_foreign(foreign)
}

/// The arguments of a call: ARGS, with `connection_id` filled in from `--connection`.
fn call_args(args: &DoArgs) -> Result<Value> {
    let mut call_args = tasks_cmd::parse_args(args.args.as_deref())?;
    // A method aimed at a connection learns which one from its arguments (the RPC target only
    // routes the call to the node holding it): `--connection ID` fills `connection_id` in.
    if let (Some(connection), Value::Object(fields)) = (&args.connection, &mut call_args) {
        match fields.get("connection_id") {
            None => {
                fields.insert("connection_id".into(), Value::String(connection.clone()));
            }
            Some(Value::String(named)) if named == connection => {}
            Some(other) => bail!(
                "ARGS names connection_id {other} but --connection is {connection:?}: the call \
                 would reach one connection's node and act on another"
            ),
        }
    }
    Ok(call_args)
}

fn target(args: &DoArgs) -> Result<Target> {
    Ok(match (&args.node, &args.connection) {
        (Some(node), _) => Target::Node(NodeId::new(node.as_str())?),
        (None, Some(connection)) => Target::Connection(connection.clone()),
        (None, None) => Target::All,
    })
}

async fn call(rpc: &Rpc, args: DoArgs) -> Result<()> {
    let call_args = call_args(&args)?;
    let target = target(&args)?;
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

/// `stellar cluster quiet NODE`: calls `tasks.quiet` on that node.
async fn quiet(rpc: &Rpc, node: &str, quiet: bool) -> Result<()> {
    let id = NodeId::new(node).with_context(|| format!("bad node id {node:?}"))?;
    let answer = rpc
        .call(&id, stellar_tasks::QUIET_METHOD, json!({ "quiet": quiet }))
        .await
        .with_context(|| format!("node {node} did not answer {}", stellar_tasks::QUIET_METHOD))?;
    if quiet {
        eprintln!("{node} is quiet: it takes no new task ({answer})");
    } else {
        eprintln!("{node} takes tasks again ({answer})");
    }
    Ok(())
}

fn print_replies(replies: &[Reply], as_json: bool) -> Result<()> {
    if as_json {
        let rows: Vec<Value> = replies
            .iter()
            .map(|reply| match &reply.result {
                Ok(value) => json!({ "node": reply.node_id, "ok": value }),
                Err(err) => json!({ "node": reply.node_id, "error": err.to_string() }),
            })
            .collect();
        return output::json(&rows);
    }
    if replies.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&["NODE", "REPLY"]);
    for reply in replies {
        let text = match &reply.result {
            Ok(value) => value.to_string(),
            Err(err) => format!("error: {err}"),
        };
        table.row(vec![reply.node_id.to_string(), text]);
    }
    table.print();
    Ok(())
}

async fn publish(bus: &Bus, message_type: &str, body: &str) -> Result<()> {
    let body: Value =
        serde_json::from_str(body).with_context(|| format!("BODY is not JSON: {body}"))?;
    bus.publish(message_type, &body).await?;
    eprintln!("published {message_type}");
    Ok(())
}
