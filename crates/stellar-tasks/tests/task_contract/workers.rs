//! WorkerRegistry: which nodes serve which queues, for as long as they keep announcing.

use crate::support::*;

fn pool(node: &str, queues: &[&str]) -> WorkerInfo {
    WorkerInfo {
        node: node.into(),
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        concurrency: 4,
        tasks: vec!["work".into()],
    }
}

async fn an_announcement_lasts_its_ttl_and_a_new_one_replaces_it(backend: Backend) {
    let store = backend.store().await;
    assert!(store.workers().await.expect("workers").is_empty());
    store
        .announce(&pool("b", &["default"]), Duration::from_millis(300))
        .await
        .expect("announce");
    store
        .announce(&pool("a", &["default"]), Duration::from_secs(30))
        .await
        .expect("announce");
    let nodes: Vec<String> = store
        .workers()
        .await
        .expect("workers")
        .into_iter()
        .map(|w| w.node)
        .collect();
    assert_eq!(nodes, ["a", "b"], "sorted by node");
    store
        .announce(&pool("a", &["high", "default"]), Duration::from_secs(30))
        .await
        .expect("announce again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        store.workers().await.expect("workers"),
        [pool("a", &["high", "default"])],
        "b's announcement expired; a's latest replaced its first"
    );
}

contract!(an_announcement_lasts_its_ttl_and_a_new_one_replaces_it);
