//! Run notices: a run that starts serving says so, and says so again when it stops, so that
//! every caller's view of the members ([`Membership::recent_incarnation`]) follows handovers and
//! leaves at once instead of at its next read.
//!
//! Both are broadcasts with an empty body: the node and the run they are about are the
//! message's sender and incarnation, which the bus authenticates. A run can speak only for
//! itself, so a notice cannot point a node's calls at a run that has no record: only a run that
//! joined announces itself, and an announcement only replaces the run a view already lists for
//! its sender's id.

use serde_json::json;
use stellar_bus::{Bus, Membership, Message};
use tracing::{debug, warn};

/// "This run holds its node's record and serves calls": sent once [`crate::Rpc::serve`] has
/// subscribed to requests, by a run that joined the cluster (a supervised handover's replacement
/// among them).
pub(crate) const SERVING: &str = "stellar.rpc.serving";
/// "This run has stopped serving": sent when the node stops (its root token is cancelled).
pub(crate) const STOPPED: &str = "stellar.rpc.stopped";

/// Keeps `membership`'s view current with the notices that arrive on `bus`. Inline handlers:
/// each is one map update, and a notice must not wait behind the calls it is about.
pub(crate) fn follow(bus: &Bus, membership: &Membership) {
    let view = membership.clone();
    bus.subscribe_inline_handler(SERVING, move |message: &Message| {
        debug!(member = %message.sender(), incarnation = message.incarnation(), "a run announced it serves");
        view.note_incarnation(message.sender(), message.incarnation());
        Ok(())
    });
    let view = membership.clone();
    bus.subscribe_inline_handler(STOPPED, move |message: &Message| {
        debug!(member = %message.sender(), incarnation = message.incarnation(), "a run announced it stopped");
        view.note_stopped(message.sender(), message.incarnation());
        Ok(())
    });
}

/// Announces that this run serves, and that it stopped once its node stops. Nothing for a run
/// that has not joined the cluster: it has no record to point calls at.
pub(crate) fn announce(bus: &Bus, membership: &Membership) {
    if !membership.joined() {
        debug!(node_id = %bus.node_id(), "not a member: serving unannounced");
        return;
    }
    let api = bus.api().clone();
    let serving = bus.clone();
    api.spawn(async move { send(&serving, SERVING).await });
    let stopped = bus.clone();
    let cancel = api.cancellation_token();
    api.spawn(async move {
        cancel.cancelled().await;
        send(&stopped, STOPPED).await;
    });
}

async fn send(bus: &Bus, notice: &str) {
    if let Err(err) = bus.publish(notice, &json!({})).await {
        // Views then catch up at their next read of the members.
        warn!(node_id = %bus.node_id(), notice, error = %err, "could not announce this run");
    }
}
