//! This node's live connections and which rooms each is in.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::{ConnectionId, stats::Counters};

/// What the socket task of a connection is asked to send.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// A JSON text frame.
    Json(Value),
    /// A text frame serialised once and shared by every recipient (a room message), so a room
    /// of many slow members holds one copy of each message, not one per member.
    Shared(Arc<str>),
}

/// How many messages may wait for a slow client before more are dropped (and counted).
pub(crate) const OUTBOUND_CAPACITY: usize = 256;

#[derive(Debug)]
struct Local {
    tx: mpsc::Sender<Outbound>,
    connected_at_ms: u64,
    rooms: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct State {
    connections: HashMap<ConnectionId, Local>,
    /// Room -> local members -> when each joined (ms since the Unix epoch).
    rooms: HashMap<String, BTreeMap<ConnectionId, u64>>,
}

/// This node's live connections, and a room index of them so a room message costs O(members).
/// Cloning it is cheap.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    state: Arc<Mutex<State>>,
    counters: Arc<Counters>,
}

/// What the hub knows about one local connection.
#[derive(Debug, Clone)]
pub(crate) struct Details {
    pub(crate) connected_at_ms: u64,
    pub(crate) rooms: Vec<String>,
}

impl Hub {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self {
            state: Arc::default(),
            counters,
        }
    }

    /// The connections and rooms, even after a panic elsewhere poisoned the lock.
    fn state(&self) -> MutexGuard<'_, State> {
        // Each critical section is a few map updates that cannot panic half way.
        stellar_core::sync::lock(&self.state)
    }

    /// Adds a connection of this node; pushes for it go to `tx`.
    pub(crate) fn insert(&self, id: ConnectionId, tx: mpsc::Sender<Outbound>) {
        let local = Local {
            tx,
            connected_at_ms: now_ms(),
            rooms: BTreeSet::new(),
        };
        self.state().connections.insert(id, local);
    }

    /// Forgets `id` and takes it out of every room.
    pub(crate) fn remove(&self, id: &ConnectionId) {
        let mut state = self.state();
        let Some(local) = state.connections.remove(id) else {
            return;
        };
        for room in local.rooms {
            leave_index(&mut state.rooms, &room, id);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.state().connections.len()
    }

    /// How many rooms have a member here, and how many memberships that makes.
    pub(crate) fn room_stats(&self) -> (usize, usize) {
        let state = self.state();
        let members = state.rooms.values().map(BTreeMap::len).sum();
        (state.rooms.len(), members)
    }

    /// When `id` connected and the rooms it is in; `None` if it is not here.
    pub(crate) fn details(&self, id: &ConnectionId) -> Option<Details> {
        self.state().connections.get(id).map(|local| Details {
            connected_at_ms: local.connected_at_ms,
            rooms: local.rooms.iter().cloned().collect(),
        })
    }

    /// Queues `message` for `id`; false if `id` is not here. A client that fell
    /// [`OUTBOUND_CAPACITY`] messages behind loses this one (counted).
    pub(crate) fn send(&self, id: &ConnectionId, message: Outbound) -> bool {
        let Some(tx) = self.state().connections.get(id).map(|l| l.tx.clone()) else {
            return false;
        };
        if tx.try_send(message).is_err() {
            crate::stats::bump(&self.counters.ws_dropped);
        }
        true
    }

    /// Adds `id` to `room`; `None` if `id` is not here, `Some(false)` if it was a member already.
    pub(crate) fn join(&self, id: &ConnectionId, room: &str) -> Option<bool> {
        let mut state = self.state();
        let local = state.connections.get_mut(id)?;
        if !local.rooms.insert(room.to_owned()) {
            return Some(false);
        }
        state
            .rooms
            .entry(room.to_owned())
            .or_default()
            .insert(id.clone(), now_ms());
        Some(true)
    }

    /// Takes `id` out of `room`; `None` if `id` is not here, `Some(false)` if it was no member.
    pub(crate) fn leave(&self, id: &ConnectionId, room: &str) -> Option<bool> {
        let mut state = self.state();
        let local = state.connections.get_mut(id)?;
        if !local.rooms.remove(room) {
            return Some(false);
        }
        leave_index(&mut state.rooms, room, id);
        Some(true)
    }

    /// How many rooms the local connection `id` is in; `None` if it is not here.
    pub(crate) fn room_count(&self, id: &ConnectionId) -> Option<usize> {
        self.state()
            .connections
            .get(id)
            .map(|local| local.rooms.len())
    }

    /// Whether the local connection `id` is in `room`.
    pub(crate) fn is_member(&self, id: &ConnectionId, room: &str) -> bool {
        self.state()
            .rooms
            .get(room)
            .is_some_and(|members| members.contains_key(id))
    }

    /// The local members of `room` and when each joined.
    pub(crate) fn members(&self, room: &str) -> Vec<(ConnectionId, u64)> {
        self.state()
            .rooms
            .get(room)
            .map(|members| members.iter().map(|(id, at)| (id.clone(), *at)).collect())
            .unwrap_or_default()
    }

    /// Queues `payload` for every local member of `room`, without waiting for any of them.
    pub(crate) fn deliver(&self, room: &str, payload: &Value) {
        let senders: Vec<mpsc::Sender<Outbound>> = {
            let state = self.state();
            let Some(members) = state.rooms.get(room) else {
                return;
            };
            members
                .keys()
                .filter_map(|id| state.connections.get(id).map(|l| l.tx.clone()))
                .collect()
        };
        let text: Arc<str> = payload.to_string().into();
        for tx in senders {
            if tx.try_send(Outbound::Shared(text.clone())).is_err() {
                crate::stats::bump(&self.counters.ws_dropped);
            }
        }
    }
}

/// Takes `id` out of the room index, dropping the room once it has no local member left.
fn leave_index(
    rooms: &mut HashMap<String, BTreeMap<ConnectionId, u64>>,
    room: &str,
    id: &ConnectionId,
) {
    if let Some(members) = rooms.get_mut(room) {
        members.remove(id);
        if members.is_empty() {
            rooms.remove(room);
        }
    }
}

pub(crate) use stellar_core::time::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_connection_leaves_its_rooms() {
        let hub = Hub::new(Arc::default());
        let (tx, _rx) = mpsc::channel(4);
        let id = ConnectionId::new("c1");
        hub.insert(id.clone(), tx);
        assert_eq!(hub.join(&id, "lobby"), Some(true));
        assert_eq!(hub.join(&id, "lobby"), Some(false));
        assert_eq!(hub.members("lobby").len(), 1);
        hub.remove(&id);
        assert!(hub.members("lobby").is_empty());
        assert_eq!(hub.join(&id, "lobby"), None);
    }

    #[test]
    fn a_full_client_loses_messages_and_counts_them() {
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(counters.clone());
        let (tx, _rx) = mpsc::channel(1);
        let id = ConnectionId::new("c1");
        hub.insert(id.clone(), tx);
        hub.join(&id, "r");
        hub.deliver("r", &Value::Null);
        hub.deliver("r", &Value::Null);
        assert_eq!(counters.snapshot().ws_dropped, 1);
    }
}
