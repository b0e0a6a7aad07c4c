//! `stellar tasks …`: enqueue and inspect the tasks of a running cluster. One function per
//! subcommand.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use stellar_core::Config;
use stellar_node::Client;
use stellar_tasks::{
    Counters, EnqueueOptions, Enqueued, Recurrence, ScheduleInfo, ScheduleOptions, Stats,
    Submitted, TaskDefinition, TaskRecord, Tasks,
};

use crate::{
    app::client_error,
    batch,
    cli::{EnqueueArgs, TasksCommand},
    output::{self, Table, duration_ms, line, time_ms},
};

/// Runs one tasks command against the configured Redis.
pub(crate) async fn run(
    config: Config,
    command: TasksCommand,
    definitions: &[TaskDefinition],
) -> Result<()> {
    let client = Client::connect(config, definitions)
        .await
        .map_err(client_error)?;
    let result = dispatch(client.tasks(), command).await;
    client.close().await;
    result
}

async fn dispatch(tasks: &Tasks, command: TasksCommand) -> Result<()> {
    match command {
        TasksCommand::Enqueue(args) => enqueue(tasks, args).await,
        TasksCommand::Unschedule { id } => unschedule(tasks, &id).await,
        TasksCommand::Schedules { json } => schedules(tasks, json).await,
        TasksCommand::Stats { json } => stats(tasks, json).await,
        TasksCommand::Show { id, json } => show(tasks, &id, json).await,
        TasksCommand::Queued { queue, limit, json } => queued(tasks, &queue, limit, json).await,
        TasksCommand::Failed { json } => failed(tasks, json).await,
        TasksCommand::Retry { id, resign } => retry(tasks, &id, resign).await,
        TasksCommand::Remove { id } => remove(tasks, &id).await,
        TasksCommand::Pause { queue } => pause(tasks, &queue).await,
        TasksCommand::Resume { queue } => resume(tasks, &queue).await,
        TasksCommand::Workers { json } => workers(tasks, json).await,
    }
}

/// The arguments given as ARGS (the name `--help` uses), `null` when absent.
pub(crate) fn parse_args(text: Option<&str>) -> Result<Value> {
    match text {
        Some(text) => {
            serde_json::from_str(text).with_context(|| format!("ARGS is not JSON: {text}"))
        }
        None => Ok(Value::Null),
    }
}

async fn enqueue(tasks: &Tasks, args: EnqueueArgs) -> Result<()> {
    if args.stdin {
        return enqueue_stdin(tasks).await;
    }
    let name = args.name.clone().context("a task name (or --stdin)")?;
    if let (Some(count), Some(prefix)) = (args.count, &args.id) {
        return enqueue_count(tasks, &name, &args, prefix, count).await;
    }
    let task_args = parse_args(args.args.as_deref())?;
    if let Some(recurrence) = recurrence(&args) {
        return schedule(tasks, &name, &task_args, recurrence, args).await;
    }
    let at = due_at(args.in_ms, args.at.as_deref())?;
    let options = EnqueueOptions {
        queue: args.queue,
        id: args.id,
        replace: args.replace,
    };
    let submit = tasks.submit(&name, &task_args, options, at);
    let submitted = submit_checked(tasks, &name, submit).await?;
    report(&submitted)
}

/// When a task given `--every MS` or `--cron EXPR [--tz ZONE]` recurs; `None` for a task that
/// runs once.
fn recurrence(args: &EnqueueArgs) -> Option<Recurrence> {
    match (args.every, &args.cron) {
        (Some(every), _) => Some(Recurrence::every(Duration::from_millis(every))),
        (None, Some(cron)) => Some(Recurrence::cron(cron, args.tz.as_deref().unwrap_or("UTC"))),
        (None, None) => None,
    }
}

/// `--every` or `--cron`: stores the schedule and prints its id.
async fn schedule(
    tasks: &Tasks,
    name: &str,
    task_args: &Value,
    recurrence: Recurrence,
    args: EnqueueArgs,
) -> Result<()> {
    let options = ScheduleOptions {
        id: args.id,
        queue: args.queue,
    };
    let scheduled = tasks.schedule(name, task_args, recurrence, options);
    let schedule = submit_checked(tasks, name, scheduled).await?;
    line(&schedule.id);
    let next = tasks
        .schedules()
        .await?
        .into_iter()
        .find(|info| info.schedule.id == schedule.id)
        .and_then(|info| info.next_run_at_ms);
    eprintln!(
        "scheduled {name} {} as schedule {:?}, next run {} (remove it with `stellar tasks \
         unschedule {}`)",
        schedule.recurrence,
        schedule.id,
        time_ms(next),
        schedule.id
    );
    Ok(())
}

/// When a task given `--in MS` or `--at TIME` runs; `None` is now.
fn due_at(in_ms: Option<u64>, at: Option<&str>) -> Result<Option<SystemTime>> {
    Ok(match (in_ms, at) {
        (Some(ms), _) => Some(SystemTime::now() + Duration::from_millis(ms)),
        (None, Some(at)) => Some(
            humantime::parse_rfc3339_weak(at)
                .with_context(|| format!("--at is not an RFC 3339 time: {at}"))?,
        ),
        (None, None) => None,
    })
}

/// `--count N`: tasks `ID-0` .. `ID-<N-1>`, `{id}` in ARGS replaced by each one's id.
async fn enqueue_count(
    tasks: &Tasks,
    name: &str,
    args: &EnqueueArgs,
    prefix: &str,
    count: u64,
) -> Result<()> {
    let template = args.args.as_deref().unwrap_or("null");
    for k in 0..count {
        let id = format!("{prefix}-{k}");
        let task_args = parse_args(Some(&template.replace("{id}", &id)))?;
        let options = EnqueueOptions {
            queue: args.queue.clone(),
            id: Some(id),
            replace: args.replace,
        };
        let submit = tasks.submit(name, &task_args, options, None);
        let submitted = submit_checked(tasks, name, submit).await?;
        line(&submitted.id);
    }
    Ok(())
}

/// `--stdin`: JSON lines, all checked before the first is enqueued.
async fn enqueue_stdin(tasks: &Tasks) -> Result<()> {
    let input = tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
        .await?
        .context("reading standard input")?;
    let known: BTreeSet<String> = tasks.names().into_iter().collect();
    let batch = batch::parse(&input, &known, SystemTime::now())?;
    let submitted = batch::enqueue_batch(tasks, batch).await?;
    for one in &submitted {
        report(one)?;
    }
    eprintln!("enqueued {} task(s)", submitted.len());
    Ok(())
}

/// Prints the id of an enqueued task, and says so when a task with its id existed already.
fn report(submitted: &Submitted) -> Result<()> {
    line(&submitted.id);
    if let Enqueued::Exists(state) = submitted.outcome {
        let state = serde_json::to_value(state)?;
        eprintln!(
            "not added: a task with id {:?} exists ({}); --replace runs a completed or failed one again",
            submitted.id,
            state.as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// Runs `submit`; an unknown task name is explained with the names the cluster's workers run.
async fn submit_checked<T>(
    tasks: &Tasks,
    name: &str,
    submit: impl Future<Output = Result<T, stellar_tasks::Error>>,
) -> Result<T> {
    match submit.await {
        Err(stellar_tasks::Error::UnknownTask { .. }) => Err(unknown_task(tasks, name).await),
        other => Ok(other?),
    }
}

/// Why `name` cannot be enqueued from here, and what the cluster runs instead.
async fn unknown_task(tasks: &Tasks, name: &str) -> anyhow::Error {
    let here = tasks.names().join(", ");
    let running: BTreeSet<String> = match tasks.workers().await {
        Ok(workers) => workers.into_iter().flat_map(|(w, _)| w.tasks).collect(),
        Err(_) => BTreeSet::new(),
    };
    let cluster = if running.is_empty() {
        "no live worker reports its tasks".to_owned()
    } else {
        running.into_iter().collect::<Vec<_>>().join(", ")
    };
    anyhow::anyhow!(
        "unknown task {name:?}: register it with Tasks::register (App::task in your binary) and \
         enqueue it with that binary. This program knows: {here}; the cluster's workers run: \
         {cluster}"
    )
}

async fn unschedule(tasks: &Tasks, id: &str) -> Result<()> {
    if !tasks.unschedule(id).await? {
        let ids: Vec<String> = tasks
            .schedules()
            .await?
            .into_iter()
            .map(|info| info.schedule.id)
            .collect();
        bail!(
            "no recurring schedule with id {id:?}; the schedules are: {}",
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        );
    }
    Ok(())
}

async fn schedules(tasks: &Tasks, as_json: bool) -> Result<()> {
    let schedules = tasks.schedules().await?;
    if as_json {
        let listed: Vec<Value> = schedules.iter().map(schedule_json).collect();
        return output::json(&listed);
    }
    let mut table = Table::new(&["ID", "TASK", "QUEUE", "WHEN", "NEXT RUN", "ARGS"]);
    let mut problems = Vec::new();
    for info in schedules {
        let next = match info.problem {
            Some(problem) => {
                problems.push(format!("{}: never runs: {problem}", info.schedule.id));
                "never (see below)".to_owned()
            }
            None => time_ms(info.next_run_at_ms),
        };
        let schedule = info.schedule;
        table.row(vec![
            schedule.id,
            schedule.task,
            schedule.queue,
            schedule.recurrence.to_string(),
            next,
            schedule.args,
        ]);
    }
    table.print();
    if !problems.is_empty() {
        line("");
        for problem in problems {
            line(&problem);
        }
    }
    Ok(())
}

/// One schedule as `tasks schedules --json` prints it.
fn schedule_json(info: &ScheduleInfo) -> Value {
    let schedule = &info.schedule;
    let mut value = json!({
        "id": schedule.id,
        "task": schedule.task,
        "queue": schedule.queue,
        "args": schedule.args,
        "next_run_at_ms": info.next_run_at_ms,
        "problem": info.problem,
    });
    if let (Value::Object(fields), Ok(Value::Object(when))) =
        (&mut value, serde_json::to_value(&schedule.recurrence))
    {
        fields.extend(when);
    }
    value
}

async fn stats(tasks: &Tasks, as_json: bool) -> Result<()> {
    let stats = tasks.stats().await?;
    if as_json {
        return output::json(&stats);
    }
    line(&format!(
        "processed {}  failed {}  retried {}",
        stats.processed, stats.failed, stats.retried
    ));
    line(&format!(
        "delayed {}  in flight {}  in failed set {}",
        stats.delayed, stats.in_flight, stats.failed_now
    ));
    print_queues(&stats);
    print_counters(&stats);
    Ok(())
}

fn print_queues(stats: &Stats) {
    let mut table = Table::new(&["QUEUE", "DEPTH", "OLDEST MS"]).right(&[1, 2]);
    for (queue, backlog) in &stats.queues {
        table.row(vec![
            queue.clone(),
            backlog.depth.to_string(),
            backlog.oldest_ms.to_string(),
        ]);
    }
    line("");
    table.print();
    if stats.parked.is_empty() {
        return;
    }
    let mut parked = Table::new(&["QUEUE TASK", "WAITING FOR A NODE THAT RUNS IT"]).right(&[1]);
    for (queue_and_name, waiting) in &stats.parked {
        parked.row(vec![queue_and_name.clone(), waiting.to_string()]);
    }
    line("");
    parked.print();
}

/// The per-task and per-node counters, as tables.
fn print_counters(stats: &Stats) {
    print_counter_table("TASK", &stats.tasks);
    print_counter_table("NODE", &stats.nodes);
}

/// One table of counters: a row per task name or node, a column per counter.
fn print_counter_table(title: &'static str, counters: &BTreeMap<String, Counters>) {
    if counters.is_empty() {
        return;
    }
    let mut table = Table::new(&[title, "PROCESSED", "FAILED", "RETRIED"]).right(&[1, 2, 3]);
    for (subject, c) in counters {
        table.row(vec![
            subject.clone(),
            c.processed.to_string(),
            c.failed.to_string(),
            c.retried.to_string(),
        ]);
    }
    line("");
    table.print();
}

async fn show(tasks: &Tasks, id: &str, as_json: bool) -> Result<()> {
    let Some(record) = tasks.show(id).await? else {
        bail!("no task with id {id:?}")
    };
    if as_json {
        return output::json(&record);
    }
    print_record(&record);
    Ok(())
}

/// A task record as `name  value` lines, its times and how long it waited and ran.
/// A reported progress: a number as a percentage, anything else as its JSON.
fn progress_text(progress: &Value) -> String {
    match progress.as_u64() {
        Some(percent) => format!("{percent} %"),
        None => progress.to_string(),
    }
}

fn print_record(record: &TaskRecord) {
    let state = serde_json::to_value(record.state).unwrap_or_default();
    // It waited from the later of its enqueue and its due time until its last attempt started.
    let ready_at = record.enqueued_at_ms.max(record.due_at_ms);
    let waited = record
        .started_at_ms
        .zip(ready_at)
        .map(|(s, r)| s.saturating_sub(r));
    let ran = record
        .finished_at_ms
        .zip(record.started_at_ms)
        .map(|(f, s)| f.saturating_sub(s));
    let mut table = Table::new(&["", ""]);
    let mut field = |name: &str, value: String| table.row(vec![name.to_owned(), value]);
    field("id", record.id.clone());
    field("name", record.name.clone());
    field("queue", record.queue.clone());
    field("state", state.as_str().unwrap_or("?").to_owned());
    field(
        "attempts",
        format!("{}/{}", record.attempts, record.max_attempts),
    );
    field("node", record.node.clone().unwrap_or_else(|| "-".into()));
    field("args", record.args.clone());
    field("enqueued", time_ms(record.enqueued_at_ms));
    field("due", time_ms(record.due_at_ms));
    field("started", time_ms(record.started_at_ms));
    field("finished", time_ms(record.finished_at_ms));
    field("waited", duration_ms(waited));
    field("ran", duration_ms(ran));
    if let Some(progress) = &record.progress {
        field("progress", progress_text(progress));
    }
    if let Some(error) = &record.error {
        field("error", error.clone());
    }
    if let Some(trace_id) = &record.trace_id {
        field("trace", trace_id.clone());
    }
    // The header row is blank: skip it.
    let text = table.render();
    line(
        text.split_once('\n')
            .map_or("", |(_, rows)| rows)
            .trim_end(),
    );
}

async fn queued(tasks: &Tasks, queue: &str, limit: u64, as_json: bool) -> Result<()> {
    if limit == 0 {
        bail!("--limit must be at least 1");
    }
    let records = tasks.queued(queue, 0, limit - 1).await?;
    if as_json {
        return output::json(&records);
    }
    let mut table = Table::new(&["ID", "NAME", "ENQUEUED", "ARGS"]);
    for record in records {
        table.row(vec![
            record.id,
            record.name,
            time_ms(record.enqueued_at_ms),
            record.args,
        ]);
    }
    table.print();
    Ok(())
}

async fn failed(tasks: &Tasks, as_json: bool) -> Result<()> {
    let failed = tasks.failed().await?;
    if as_json {
        return output::json(&failed);
    }
    let mut table =
        Table::new(&["ID", "NAME", "ATTEMPTS", "NODE", "FINISHED", "ERROR"]).right(&[2]);
    for record in failed {
        table.row(vec![
            record.id,
            record.name,
            record.attempts.to_string(),
            record.node.unwrap_or_else(|| "-".into()),
            time_ms(record.finished_at_ms),
            record.error.unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(())
}

async fn retry(tasks: &Tasks, id: &str, resign: bool) -> Result<()> {
    let retried = if resign {
        tasks.retry_failed_resigned(id).await?
    } else {
        tasks.retry_failed(id).await?
    };
    if !retried {
        bail!("task {id:?} is not in the failed set");
    }
    Ok(())
}

async fn remove(tasks: &Tasks, id: &str) -> Result<()> {
    if !tasks.remove_failed(id).await? {
        bail!("task {id:?} is not in the failed set");
    }
    Ok(())
}

async fn pause(tasks: &Tasks, queue: &str) -> Result<()> {
    if tasks.pause_queue(queue).await? {
        eprintln!("paused {queue}: workers stop claiming from it within a second");
    } else {
        eprintln!("{queue} was paused already");
    }
    Ok(())
}

async fn resume(tasks: &Tasks, queue: &str) -> Result<()> {
    if tasks.resume_queue(queue).await? {
        eprintln!("resumed {queue}");
    } else {
        eprintln!("{queue} was not paused");
    }
    Ok(())
}

async fn workers(tasks: &Tasks, as_json: bool) -> Result<()> {
    let leader = tasks.leader().await?;
    let workers = tasks.workers().await?;
    if as_json {
        let workers: Vec<Value> = workers
            .into_iter()
            .map(|(worker, running)| {
                let ids: Vec<String> = running.into_iter().map(|t| t.id).collect();
                json!({
                    "node": worker.node,
                    "queues": worker.queues,
                    "concurrency": worker.concurrency,
                    "tasks": worker.tasks,
                    "running": ids,
                })
            })
            .collect();
        let leader = leader.map(|(node, epoch)| json!({ "node": node, "epoch": epoch }));
        return output::json(&json!({ "leader": leader, "workers": workers }));
    }
    match leader {
        Some((leader, epoch)) => line(&format!("scheduler leader: {leader} (epoch {epoch})")),
        None => line("scheduler leader: none"),
    }
    let mut table = Table::new(&["NODE", "QUEUES", "CONCURRENCY", "RUNNING"]).right(&[2]);
    for (worker, running) in workers {
        let ids: Vec<String> = running.into_iter().map(|t| t.id).collect();
        table.row(vec![
            worker.node,
            worker.queues.join(","),
            worker.concurrency.to_string(),
            ids.join(","),
        ]);
    }
    table.print();
    Ok(())
}
