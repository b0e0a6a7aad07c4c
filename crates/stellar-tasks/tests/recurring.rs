//! Recurring tasks on both stores, in real time (slots follow the wall clock).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use stellar_bus::{RedisConfig, RedisPool, RedisTransport, Transport};
use stellar_core::{Api, CancellationToken, Config, NodeId};
use stellar_tasks::{
    MemoryTaskStore, Recurrence, RedisTaskStore, ScheduleOptions, TaskConfig, TaskDefinition,
    TaskStore, Tasks, WorkSignal,
};
use stellar_testkit::RedisServer;

/// Slots seen, with how many times each ran.
type Slots = Arc<Mutex<BTreeMap<u64, u32>>>;

async fn stores(
    redis: Option<&RedisServer>,
    cancel: &CancellationToken,
    n: usize,
) -> Vec<(Arc<dyn TaskStore>, WorkSignal)> {
    let memory = MemoryTaskStore::new();
    let mut stores: Vec<(Arc<dyn TaskStore>, WorkSignal)> = Vec::new();
    for _ in 0..n {
        match redis {
            None => stores.push((Arc::new(memory.clone()), memory.signal())),
            Some(server) => {
                let pool = RedisPool::connect(RedisConfig::new(server.url()))
                    .await
                    .expect("redis");
                let transport: Arc<dyn Transport> = Arc::new(
                    RedisTransport::connect(pool.clone(), cancel.clone())
                        .await
                        .expect("subscriber"),
                );
                stores.push((
                    Arc::new(RedisTaskStore::new(pool)),
                    WorkSignal::subscribed(transport),
                ));
            }
        }
    }
    stores
}

fn node(
    (store, signal): (Arc<dyn TaskStore>, WorkSignal),
    id: &str,
    slots: &Slots,
    fail_even: bool,
) -> (Api, Tasks) {
    let api = Api::new(Config {
        id: Some(NodeId::new(id).expect("id")),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    });
    let config = TaskConfig {
        idle_poll: Duration::from_millis(50),
        maintenance_interval: Duration::from_millis(50),
        ..TaskConfig::default()
    };
    let tasks = Tasks::new(store, signal, api.node_id().clone(), config);
    let slots = slots.clone();
    tasks.register(
        TaskDefinition::new("tick", move |ctx, _: serde_json::Value| {
            let slots = slots.clone();
            async move {
                let slot: u64 = ctx
                    .id
                    .rsplit(':')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("not a slot id")?;
                *slots.lock().expect("slots").entry(slot).or_default() += 1;
                if fail_even && (slot / 200).is_multiple_of(2) {
                    return Err("even slots fail".into());
                }
                Ok(())
            }
        })
        .every(Duration::from_millis(200))
        .max_attempts(1),
    );
    tasks.start(&api);
    (api, tasks)
}

async fn every_slot_runs_once_across_three_nodes(redis: Option<RedisServer>) {
    let cancel = CancellationToken::new();
    let slots = Slots::default();
    let mut nodes = Vec::new();
    for (i, store) in stores(redis.as_ref(), &cancel, 3)
        .await
        .into_iter()
        .enumerate()
    {
        nodes.push(node(store, &format!("n{i}"), &slots, true));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Stop the leader first, half way: another node must take over without doubling or gaps.
    let leader = nodes[0]
        .1
        .leader()
        .await
        .expect("leader")
        .expect("someone leads")
        .0;
    let index = nodes
        .iter()
        .position(|(api, _)| api.node_id().as_str() == leader)
        .expect("a node leads");
    let (api, _) = nodes.remove(index);
    api.shutdown().await.expect("stops");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (api, _) in nodes {
        api.shutdown().await.expect("stops");
    }
    cancel.cancel();
    let slots = slots.lock().expect("slots").clone();
    let runs: Vec<u64> = slots.keys().copied().collect();
    assert!(runs.len() >= 20, "too few slots ran: {runs:?}");
    assert!(
        slots.values().all(|n| *n == 1),
        "a slot ran twice: {slots:?}"
    );
    for pair in runs.windows(2) {
        assert_eq!(pair[1] - pair[0], 200, "a slot was missed: {runs:?}");
    }
}

async fn schedules_can_be_added_and_removed_at_runtime(redis: Option<RedisServer>) {
    let cancel = CancellationToken::new();
    let (store, signal) = stores(redis.as_ref(), &cancel, 1).await.remove(0);
    let api = Api::new(Config::default());
    let tasks = Tasks::new(
        store,
        signal,
        api.node_id().clone(),
        TaskConfig {
            maintenance_interval: Duration::from_millis(50),
            ..TaskConfig::default()
        },
    );
    let runs = Arc::new(Mutex::new(Vec::new()));
    let log = runs.clone();
    tasks.register(TaskDefinition::new("report", move |_, args: String| {
        let log = log.clone();
        async move {
            log.lock().expect("runs").push(args);
            Ok(())
        }
    }));
    tasks.start(&api);
    tasks
        .schedule_recurring("report", &"weekly", Duration::from_millis(100))
        .await
        .expect("schedule");
    assert_eq!(tasks.schedules().await.expect("schedules").len(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(tasks.unschedule("report").await.expect("unschedule"));
    assert!(!tasks.unschedule("report").await.expect("unschedule"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = runs.lock().expect("runs").len();
    assert!(count >= 5, "ran {count} times");
    assert!(
        runs.lock()
            .expect("runs")
            .iter()
            .all(|args| args == "weekly")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        runs.lock().expect("runs").len(),
        count,
        "it ran after unschedule"
    );
    api.shutdown().await.expect("stops");
    cancel.cancel();
}

/// Runs per (schedule id, slot), with the arguments each run got.
type Runs = Arc<Mutex<BTreeMap<(String, u64), Vec<String>>>>;

/// Two nodes running `report`, which records the schedule and slot of its task id.
async fn report_nodes(
    redis: Option<&RedisServer>,
    cancel: &CancellationToken,
    runs: &Runs,
) -> Vec<(Api, Tasks)> {
    let mut nodes = Vec::new();
    for (i, (store, signal)) in stores(redis, cancel, 2).await.into_iter().enumerate() {
        let api = Api::new(Config {
            id: Some(NodeId::new(format!("r{i}")).expect("id")),
            shutdown_timeout: Duration::from_secs(5),
            ..Config::default()
        });
        let config = TaskConfig {
            idle_poll: Duration::from_millis(50),
            maintenance_interval: Duration::from_millis(50),
            ..TaskConfig::default()
        };
        let tasks = Tasks::new(store, signal, api.node_id().clone(), config);
        let runs = runs.clone();
        tasks.register(TaskDefinition::new("report", move |ctx, region: String| {
            let runs = runs.clone();
            async move {
                let (schedule, slot) = ctx
                    .id
                    .strip_prefix("recur:")
                    .and_then(|rest| rest.rsplit_once(':'))
                    .ok_or("not a slot id")?;
                let slot: u64 = slot.parse()?;
                let mut runs = runs.lock().expect("runs");
                runs.entry((schedule.to_owned(), slot))
                    .or_default()
                    .push(region);
                Ok(())
            }
        }));
        tasks.start(&api);
        nodes.push((api, tasks));
    }
    nodes
}

/// Two schedules of one task with their own ids and arguments both run, each once per slot.
async fn schedules_of_one_task_with_their_own_ids_each_run_once_per_slot(
    redis: Option<RedisServer>,
) {
    let cancel = CancellationToken::new();
    let runs = Runs::default();
    let nodes = report_nodes(redis.as_ref(), &cancel, &runs).await;
    let tasks = &nodes[0].1;
    let every = Recurrence::every(Duration::from_millis(200));
    for region in ["eu", "us"] {
        let options = ScheduleOptions::default().id(format!("report-{region}"));
        let schedule = tasks
            .schedule("report", &region, every.clone(), options)
            .await
            .expect("schedule");
        assert_eq!(schedule.id, format!("report-{region}"));
    }
    let listed: Vec<String> = tasks
        .schedules()
        .await
        .expect("schedules")
        .into_iter()
        .map(|info| info.schedule.id)
        .collect();
    assert_eq!(listed, ["report-eu", "report-us"]);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(tasks.unschedule("report-eu").await.expect("unschedule"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (api, _) in nodes {
        api.shutdown().await.expect("stops");
    }
    cancel.cancel();
    let runs = runs.lock().expect("runs").clone();
    for region in ["eu", "us"] {
        let id = format!("report-{region}");
        let slots: Vec<u64> = runs
            .keys()
            .filter(|(s, _)| *s == id)
            .map(|(_, slot)| *slot)
            .collect();
        assert!(slots.len() >= 8, "{id} ran {} slots: {runs:?}", slots.len());
        for pair in slots.windows(2) {
            assert_eq!(pair[1] - pair[0], 200, "{id} missed a slot: {slots:?}");
        }
    }
    for ((id, slot), args) in &runs {
        assert_eq!(args.len(), 1, "{id} slot {slot} ran {} times", args.len());
        assert_eq!(format!("report-{}", args[0]), *id, "{id} ran with {args:?}");
    }
}

/// A cron schedule with seconds runs once per matching second, on whole seconds, from the next
/// match on.
async fn a_cron_schedule_runs_once_per_fire_time(redis: Option<RedisServer>) {
    let cancel = CancellationToken::new();
    let runs = Runs::default();
    let nodes = report_nodes(redis.as_ref(), &cancel, &runs).await;
    let tasks = &nodes[0].1;
    let every_second = Recurrence::cron("* * * * * *", "Europe/Paris");
    let options = ScheduleOptions::default().id("each-second");
    tasks
        .schedule("report", &"cron", every_second, options)
        .await
        .expect("schedule");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for (api, _) in nodes {
        api.shutdown().await.expect("stops");
    }
    cancel.cancel();
    let runs = runs.lock().expect("runs").clone();
    let slots: Vec<u64> = runs.keys().map(|(_, slot)| *slot).collect();
    assert!(slots.len() >= 2, "{runs:?}");
    assert!(slots.iter().all(|slot| slot % 1000 == 0), "{slots:?}");
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "a fire time was missed: {slots:?}");
    }
    assert!(runs.values().all(|args| args == &["cron"]), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_cron_schedule_runs_once_per_fire_time() {
    a_cron_schedule_runs_once_per_fire_time(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_cron_schedule_runs_once_per_fire_time() {
    a_cron_schedule_runs_once_per_fire_time(Some(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_schedules_of_one_task_with_their_own_ids_each_run_once_per_slot() {
    schedules_of_one_task_with_their_own_ids_each_run_once_per_slot(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_schedules_of_one_task_with_their_own_ids_each_run_once_per_slot() {
    schedules_of_one_task_with_their_own_ids_each_run_once_per_slot(Some(RedisServer::start()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_every_slot_runs_once_across_three_nodes() {
    every_slot_runs_once_across_three_nodes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_every_slot_runs_once_across_three_nodes() {
    every_slot_runs_once_across_three_nodes(Some(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_schedules_can_be_added_and_removed_at_runtime() {
    schedules_can_be_added_and_removed_at_runtime(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_schedules_can_be_added_and_removed_at_runtime() {
    schedules_can_be_added_and_removed_at_runtime(Some(RedisServer::start())).await;
}
