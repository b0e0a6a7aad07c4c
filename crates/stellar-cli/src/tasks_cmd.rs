//! `stellar tasks …`: enqueue and inspect the tasks of a running cluster.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use stellar_core::Config;
use stellar_node::Client;
use stellar_tasks::{EnqueueOptions, Enqueued, TaskDefinition, TaskRecord};

use crate::cli::TasksCommand;

/// Runs one tasks command against the configured Redis.
pub(crate) async fn run(
    config: Config,
    command: TasksCommand,
    definitions: &[TaskDefinition],
) -> Result<()> {
    let client = Client::connect(config, definitions)
        .await
        .context("`stellar tasks` connects to the cluster")?;
    let tasks = client.tasks().clone();
    let result = async {
        match command {
            TasksCommand::Enqueue {
                name,
                args,
                queue,
                in_ms,
                at,
                every,
                id,
                replace,
                count,
            } => {
                if let (Some(count), Some(prefix)) = (count, &id) {
                    let template = args.as_deref().unwrap_or("null");
                    for k in 0..count {
                        let id = format!("{prefix}-{k}");
                        let text = template.replace("{id}", &id);
                        let args: Value = serde_json::from_str(&text)
                            .with_context(|| format!("ARGS_JSON is not JSON: {text}"))?;
                        let options = EnqueueOptions {
                            queue: queue.clone(),
                            id: Some(id),
                            replace,
                        };
                        let submitted = tasks.submit(&name, &args, options, None).await?;
                        println!("{}", submitted.id);
                    }
                    return Ok(());
                }
                let args: Value = match &args {
                    Some(text) => serde_json::from_str(text)
                        .with_context(|| format!("ARGS_JSON is not JSON: {text}"))?,
                    None => Value::Null,
                };
                if let Some(every) = every {
                    tasks
                        .schedule_recurring(&name, &args, Duration::from_millis(every))
                        .await?;
                    eprintln!("scheduled {name} every {every} ms");
                    return Ok(());
                }
                let options = EnqueueOptions { queue, id, replace };
                let at = match (in_ms, at) {
                    (Some(ms), _) => Some(SystemTime::now() + Duration::from_millis(ms)),
                    (None, Some(at)) => Some(
                        humantime::parse_rfc3339_weak(&at)
                            .with_context(|| format!("--at is not an RFC 3339 time: {at}"))?,
                    ),
                    (None, None) => None,
                };
                let submitted = tasks.submit(&name, &args, options, at).await?;
                println!("{}", submitted.id);
                if let Enqueued::Exists(state) = submitted.outcome {
                    let state = serde_json::to_value(state)?;
                    eprintln!(
                        "not added: a task with this id exists ({}); --replace runs a completed or failed one again",
                        state.as_str().unwrap_or("?")
                    );
                }
            }
            TasksCommand::Unschedule { name } => {
                if !tasks.unschedule(&name).await? {
                    bail!("no recurring schedule named {name:?}");
                }
            }
            TasksCommand::Stats { json } => {
                let stats = tasks.stats().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&stats)?);
                } else {
                    println!(
                        "processed {}  failed {}  retried {}",
                        stats.processed, stats.failed, stats.retried
                    );
                    println!(
                        "delayed {}  in flight {}  in failed set {}",
                        stats.delayed, stats.in_flight, stats.failed_now
                    );
                    for (queue, backlog) in &stats.queues {
                        println!(
                            "queue {queue}: {} waiting, oldest {} ms",
                            backlog.depth, backlog.oldest_ms
                        );
                    }
                    for (queue_and_name, waiting) in &stats.parked {
                        println!(
                            "waiting for a node that can run it: {queue_and_name}: {waiting}"
                        );
                    }
                    let counted = stats.tasks.iter().map(|(name, c)| ("task", name, c));
                    let by_node = stats.nodes.iter().map(|(node, c)| ("node", node, c));
                    for (what, name, c) in counted.chain(by_node) {
                        println!(
                            "{what} {name}: processed {}  failed {}  retried {}",
                            c.processed, c.failed, c.retried
                        );
                    }
                }
            }
            TasksCommand::Show { id, json } => {
                let Some(record) = tasks.show(&id).await? else {
                    bail!("no task with id {id:?}")
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&record)?);
                } else {
                    print_record(&record);
                }
            }
            TasksCommand::Queued { queue, limit } => {
                for record in tasks.queued(&queue, 0, limit.saturating_sub(1)).await? {
                    println!("{} {} {}", record.id, record.name, record.args);
                }
            }
            TasksCommand::Failed { json } => {
                let failed = tasks.failed().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&failed)?);
                } else {
                    for record in &failed {
                        let node = record.node.as_deref().unwrap_or("-");
                        let error = record.error.as_deref().unwrap_or("");
                        println!(
                            "{} {} attempts={} node={node} error={error}",
                            record.id, record.name, record.attempts
                        );
                    }
                }
            }
            TasksCommand::Retry { id, resign } => {
                let retried = if resign {
                    tasks.retry_failed_resigned(&id).await?
                } else {
                    tasks.retry_failed(&id).await?
                };
                if !retried {
                    bail!("task {id:?} is not in the failed set");
                }
            }
            TasksCommand::Remove { id } => {
                if !tasks.remove_failed(&id).await? {
                    bail!("task {id:?} is not in the failed set");
                }
            }
            TasksCommand::Workers => {
                match tasks.leader().await? {
                    Some((leader, epoch)) => println!("scheduler leader: {leader} (epoch {epoch})"),
                    None => println!("scheduler leader: none"),
                }
                for (worker, running) in tasks.workers().await? {
                    let ids: Vec<&str> = running.iter().map(|t| t.id.as_str()).collect();
                    println!(
                        "{} queues={} concurrency={} running=[{}]",
                        worker.node,
                        worker.queues.join(","),
                        worker.concurrency,
                        ids.join(",")
                    );
                }
            }
        }
        Ok(())
    }
    .await;
    client.close().await;
    result
}

fn print_record(record: &TaskRecord) {
    println!("id        {}", record.id);
    println!("name      {}", record.name);
    println!("queue     {}", record.queue);
    println!("state     {:?}", record.state);
    println!("attempts  {}/{}", record.attempts, record.max_attempts);
    println!("node      {}", record.node.as_deref().unwrap_or("-"));
    println!("args      {}", record.args);
    if let Some(error) = &record.error {
        println!("error     {error}");
    }
}
