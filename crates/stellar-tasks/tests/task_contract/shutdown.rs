//! Stopping a node: cases that need a second runtime thread on both backends (a handler here
//! blocks its thread, which a single-threaded runtime could never get past).

use crate::support::*;

async fn a_handler_that_blocks_its_thread_does_not_hold_up_the_stop(backend: Backend) {
    let config = TaskConfig {
        drain_timeout: Duration::from_millis(200),
        lease: Duration::from_secs(30),
        ..fast()
    };
    let (api, tasks) = backend.node("n1", config).await;
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (let_go, begun) = (release.clone(), started.clone());
    tasks.register(TaskDefinition::new("blocks", move |_, _: ()| {
        let (release, started) = (let_go.clone(), begun.clone());
        async move {
            started.store(true, Ordering::SeqCst);
            // Never reaches an await, so an abort cannot stop it: only `release` (or 20 s) does.
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while !release.load(Ordering::SeqCst) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        }
    }));
    tasks.start(&api);
    let id = tasks
        .enqueue("blocks", &(), EnqueueOptions::default())
        .await
        .expect("enqueue");
    eventually("the handler is blocking its thread", async || {
        started.load(Ordering::SeqCst)
    })
    .await;
    let stopping = std::time::Instant::now();
    let stopped = api.shutdown().await;
    let took = stopping.elapsed();
    release.store(true, Ordering::SeqCst);
    stopped.expect("stops within its deadline");
    // The drain deadline, half a second for the handler, and a margin for the hand-back.
    assert!(
        took < Duration::from_millis(200 + 500 + 1_500),
        "the stop waited {took:?} for a handler that blocks its thread"
    );
    let record = tasks.show(&id).await.expect("show").expect("record");
    assert_eq!(
        (record.state, record.attempts),
        (TaskState::Queued, 0),
        "handed back, attempt not counted"
    );
}

stellar_testkit::contract_cases!(a_handler_that_blocks_its_thread_does_not_hold_up_the_stop);
