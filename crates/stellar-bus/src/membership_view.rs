//! A node's local view of the live members: which run of each node holds its record, as last
//! read from the store and as corrected since by what runs announce (see
//! [`Membership::recent_incarnation`](crate::Membership::recent_incarnation)).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use stellar_core::{NodeId, sync};
use tokio::time::Instant;

use crate::NodeInfo;

/// The live members as this node last learned them. Every entry says when it was learned, so a
/// read of the store that began before a correction arrived does not undo it.
#[derive(Debug)]
pub(crate) struct MemberView {
    state: Mutex<State>,
    /// How long a run that said it stopped is kept out of the view: until its record, no longer
    /// renewed, can no longer look live (`heartbeat_ttl` plus `RECORD_SKEW`).
    stopped_for: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// When the read of the store that last refreshed the view began; `None` before the first.
    read_at: Option<Instant>,
    /// Each live node's run, and when that was learned.
    runs: HashMap<NodeId, Seen>,
    /// Runs that said they stopped, each until it is forgotten.
    stopped: HashMap<(NodeId, u64), Instant>,
    /// Nodes whose entry went old early (a call to the run it lists went unanswered), each with
    /// when: only a read that began after that answers for the node again.
    unanswered: HashMap<NodeId, Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    incarnation: u64,
    /// When the read that listed it began, or when a run announced itself.
    as_of: Instant,
}

/// What the view says about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The view is recent and lists this run of the node.
    Listed(u64),
    /// The view is recent but does not list the node (it may have joined since).
    Unlisted,
    /// The view is too old to answer (or was never read), or its entry for this node went old
    /// early ([`MemberView::note_unanswered`]).
    Old,
}

impl MemberView {
    pub(crate) fn new(stopped_for: Duration) -> Self {
        Self {
            state: Mutex::default(),
            stopped_for,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each critical section is one update of the view: a poisoned lock is still consistent.
        sync::lock(&self.state)
    }

    /// What the view says about `node`, if its last read began less than `max_age` ago.
    pub(crate) fn lookup(&self, node: &NodeId, max_age: Duration) -> Lookup {
        let state = self.state();
        if state
            .read_at
            .is_none_or(|read_at| read_at.elapsed() >= max_age)
        {
            return Lookup::Old;
        }
        if state.unanswered.contains_key(node) {
            return Lookup::Old;
        }
        match state.runs.get(node) {
            Some(seen) => Lookup::Listed(seen.incarnation),
            None => Lookup::Unlisted,
        }
    }

    /// The run of `node` the view lists, however old the view.
    pub(crate) fn incarnation(&self, node: &NodeId) -> Option<u64> {
        self.state().runs.get(node).map(|seen| seen.incarnation)
    }

    /// Every node the view lists, however old the view, ordered by id.
    pub(crate) fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.state().runs.keys().cloned().collect();
        nodes.sort();
        nodes
    }

    /// Takes in the live `nodes` a read of the store that began at `read_at` found. What the
    /// view learned after `read_at` (a run that announced itself or said it stopped) stands,
    /// and runs that said they stopped stay out. A read that began before the last one taken
    /// in is ignored: it would bring back nodes the later read no longer found.
    pub(crate) fn refresh(&self, read_at: Instant, nodes: &[NodeInfo]) {
        let mut state = self.state();
        if state.read_at.is_some_and(|latest| read_at < latest) {
            return;
        }
        state.prune_stopped(Instant::now());
        state.unanswered.retain(|_, since| *since > read_at);
        state.runs.retain(|_, seen| seen.as_of > read_at);
        for node in nodes {
            if state
                .stopped
                .contains_key(&(node.id.clone(), node.incarnation))
            {
                continue;
            }
            // What is left of the view was learned after the read began: it stands.
            state.runs.entry(node.id.clone()).or_insert(Seen {
                incarnation: node.incarnation,
                as_of: read_at,
            });
        }
        state.read_at = Some(read_at);
    }

    /// A call to the run `incarnation` of `node` went unanswered: if the view still lists that
    /// run, its entry is old from now on, until a read that begins later (or an announcement of
    /// the node's run) answers for the node again. A run that died, or a view that missed a
    /// handover, then costs one unanswered call, not one per call until the next read.
    pub(crate) fn note_unanswered(&self, node: &NodeId, incarnation: u64) {
        let now = Instant::now();
        let mut state = self.state();
        if state
            .runs
            .get(node)
            .is_some_and(|seen| seen.incarnation == incarnation)
        {
            state.unanswered.insert(node.clone(), now);
        }
    }

    /// The run `incarnation` of `node` announced that it holds the node's record and serves:
    /// the view lists it in place of the run it listed. A node the view does not list is left
    /// out (an announcement never adds a member; a read does).
    pub(crate) fn note_incarnation(&self, node: &NodeId, incarnation: u64) {
        let now = Instant::now();
        let mut state = self.state();
        if state.stopped.contains_key(&(node.clone(), incarnation)) {
            return;
        }
        if let Some(seen) = state.runs.get_mut(node) {
            *seen = Seen {
                incarnation,
                as_of: now,
            };
            // The run spoke for itself after the call that went unanswered.
            state.unanswered.remove(node);
        }
    }

    /// The run `incarnation` of `node` said it stopped: the view drops it if it lists that run,
    /// and keeps it out of every read until its record can no longer look live.
    pub(crate) fn note_stopped(&self, node: &NodeId, incarnation: u64) {
        let now = Instant::now();
        let mut state = self.state();
        state.prune_stopped(now);
        if state
            .runs
            .get(node)
            .is_some_and(|seen| seen.incarnation == incarnation)
        {
            state.runs.remove(node);
        }
        state
            .stopped
            .insert((node.clone(), incarnation), now + self.stopped_for);
    }
}

impl State {
    fn prune_stopped(&mut self, now: Instant) {
        self.stopped.retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use stellar_core::{Api, Config};

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(1);

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid id")
    }

    fn info(node: &str, incarnation: u64) -> NodeInfo {
        let api = Api::new(Config {
            id: Some(id(node)),
            ..Config::default()
        });
        let mut info = NodeInfo::of(&api, Duration::from_secs(5));
        info.incarnation = incarnation;
        info
    }

    fn view() -> MemberView {
        MemberView::new(Duration::from_secs(6))
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_is_served_for_one_interval() {
        let view = view();
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Old);
        view.refresh(Instant::now(), &[info("a", 1)]);
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Listed(1));
        assert_eq!(view.lookup(&id("b"), INTERVAL), Lookup::Unlisted);
        tokio::time::advance(INTERVAL).await;
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Old);
        assert_eq!(
            view.incarnation(&id("a")),
            Some(1),
            "still known, however old"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_announcement_replaces_a_listed_run_and_outlives_earlier_reads() {
        let view = view();
        view.refresh(Instant::now(), &[info("a", 1)]);
        let read_began = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        view.note_incarnation(&id("a"), 2);
        view.note_incarnation(&id("ghost"), 3);
        assert_eq!(view.incarnation(&id("a")), Some(2));
        assert_eq!(
            view.incarnation(&id("ghost")),
            None,
            "announcements add no member"
        );
        // A read that began before the announcement still saw the replaced run.
        view.refresh(read_began, &[info("a", 1)]);
        assert_eq!(view.incarnation(&id("a")), Some(2));
        // A later read is the truth again (e.g. the replacement failed and left).
        tokio::time::advance(Duration::from_millis(5)).await;
        view.refresh(Instant::now(), &[info("a", 1)]);
        assert_eq!(view.incarnation(&id("a")), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_stopped_stays_out_until_its_record_expires() {
        let view = view();
        view.refresh(Instant::now(), &[info("a", 1), info("b", 7)]);
        view.note_stopped(&id("a"), 1);
        view.note_stopped(&id("b"), 8);
        assert_eq!(view.incarnation(&id("a")), None);
        assert_eq!(
            view.incarnation(&id("b")),
            Some(7),
            "another run of b stopped"
        );
        // The record of a stopping run may outlive its notice for a moment.
        tokio::time::advance(Duration::from_millis(5)).await;
        view.refresh(Instant::now(), &[info("a", 1), info("b", 7)]);
        assert_eq!(view.incarnation(&id("a")), None);
        view.note_incarnation(&id("b"), 8);
        assert_eq!(
            view.incarnation(&id("b")),
            Some(7),
            "a stopped run never comes back"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        view.refresh(Instant::now(), &[info("a", 1)]);
        assert_eq!(
            view.incarnation(&id("a")),
            Some(1),
            "forgotten once it could expire"
        );
        assert_eq!(view.incarnation(&id("b")), None, "b left");
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_read_never_brings_back_a_node_a_newer_read_dropped() {
        let view = view();
        let older_read_began = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        // The newer read ends first: b left between the two reads' starts.
        view.refresh(Instant::now(), &[info("a", 1)]);
        view.refresh(older_read_began, &[info("a", 1), info("b", 7)]);
        assert_eq!(
            view.incarnation(&id("b")),
            None,
            "the older read was taken in"
        );
        assert_eq!(view.lookup(&id("b"), INTERVAL), Lookup::Unlisted);
        assert_eq!(view.nodes(), [id("a")]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_run_makes_its_entry_old_until_a_later_read() {
        let view = view();
        view.refresh(Instant::now(), &[info("a", 1), info("b", 7)]);
        let read_began = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        view.note_unanswered(&id("a"), 1);
        view.note_unanswered(&id("b"), 8);
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Old);
        assert_eq!(
            view.lookup(&id("b"), INTERVAL),
            Lookup::Listed(7),
            "another run of b went unanswered"
        );
        assert_eq!(view.incarnation(&id("a")), Some(1), "still known");
        // A read that began before the call went unanswered does not answer for a.
        view.refresh(read_began, &[info("a", 1), info("b", 7)]);
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Old);
        tokio::time::advance(Duration::from_millis(5)).await;
        view.refresh(Instant::now(), &[info("a", 1), info("b", 7)]);
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Listed(1));
        // Nor does the mark outlive what the node's run says about itself.
        view.note_unanswered(&id("a"), 1);
        view.note_incarnation(&id("a"), 2);
        assert_eq!(view.lookup(&id("a"), INTERVAL), Lookup::Listed(2));
    }
}
