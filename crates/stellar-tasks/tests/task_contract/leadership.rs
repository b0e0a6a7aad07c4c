//! Leadership: the scheduler lease and its fencing epoch.

use crate::support::*;

async fn leadership_is_a_short_lease_with_a_rising_epoch(backend: Backend) {
    let store = backend.store().await;
    let (a, b) = (NodeId::new("a").expect("id"), NodeId::new("b").expect("id"));
    let first = store
        .try_lead(&a, Duration::from_millis(300))
        .await
        .expect("lead")
        .expect("a leads");
    assert_eq!(
        store
            .try_lead(&b, Duration::from_millis(300))
            .await
            .expect("lead"),
        None
    );
    assert_eq!(
        store
            .try_lead(&a, Duration::from_millis(300))
            .await
            .expect("renew"),
        Some(first),
        "a renewal keeps the epoch"
    );
    assert_eq!(
        store.leader().await.expect("leader"),
        Some(("a".to_owned(), first))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = store
        .try_lead(&b, Duration::from_millis(300))
        .await
        .expect("lead")
        .expect("b takes over after the lease");
    assert!(second > first);
    assert_eq!(
        store
            .try_lead(&a, Duration::from_millis(300))
            .await
            .expect("lead"),
        None,
        "the old leader is fenced out"
    );
    assert!(!store.resign(&a).await.expect("resign"));
    assert!(store.resign(&b).await.expect("resign"));
    assert_eq!(store.leader().await.expect("leader"), None);
}

contract!(leadership_is_a_short_lease_with_a_rising_epoch,);
