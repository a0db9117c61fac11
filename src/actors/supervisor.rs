//! The one supervisor of the tree, at every level: it starts its children in order, restarts
//! one that dies after a backoff (restarts counted), escalates to its own parent when a
//! child dies too often, and stops its children in reverse order when asked — each the way
//! that child stops cleanly (a poller stops claiming, a pool drains, a group commit flushes).
//! ractor has no restart strategy of its own; this is it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};

use super::mailbox::Mailbox;
use crate::domain::outcome::Backoff;
use crate::events;

/// How often a child may die before its supervisor gives up and fails too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_restarts: usize,
    pub window: Duration,
    pub backoff: Backoff,
}

impl RestartPolicy {
    /// Workers and pollers: a poison CDR may kill a few in a row; ten in a minute means
    /// something is broken beyond one CDR.
    pub const WORKERS: RestartPolicy = RestartPolicy {
        max_restarts: 10,
        window: Duration::from_secs(60),
        backoff: Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)),
    };
    /// Subtrees under the root: a few restarts, then the process exits non-zero so the
    /// service manager (systemd, ECS) takes over.
    pub const SUBTREES: RestartPolicy = RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(60),
        backoff: Backoff::exponential(Duration::from_millis(200), Duration::from_secs(5)),
    };
}

/// The deaths inside the policy's window.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(policy: RestartPolicy) -> Self {
        Self { policy, recent: VecDeque::new() }
    }

    /// Records a death at `now`: the delay before the restart (doubling with each death
    /// still inside the window, so an isolated crash restarts almost at once), or `None`
    /// when the window already holds `max_restarts`.
    pub fn on_failure(&mut self, now: Instant) -> Option<Duration> {
        while self.recent.front().is_some_and(|&t| now.duration_since(t) > self.policy.window) {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts {
            return None;
        }
        let delay = self.policy.backoff.delay(self.recent.len() as u32);
        self.recent.push_back(now);
        Some(delay)
    }
}

/// Spawns a child linked under the given supervisor.
pub type StartFn = Box<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;
/// Stops a child cleanly by the deadline.
pub type StopFn = Box<dyn Fn(ActorCell, Instant) -> BoxFuture<'static, ()> + Send + Sync>;

/// One child: how to start it under a supervisor, and how it stops cleanly by a deadline.
pub struct ChildSpec {
    /// The `actor` label of the restart counter, and the name in logs.
    pub name: String,
    start: StartFn,
    stop: StopFn,
}

impl ChildSpec {
    /// An actor reached through `mailbox`, built anew by `make` at each (re)start. It stops
    /// at once, dropping what it was sent but has not handled (a poller's wake-ups).
    pub fn actor<A, F>(name: impl Into<String>, mailbox: Mailbox<A::Msg>, make: F) -> ChildSpec
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let start: StartFn = Box::new(move |sup| {
            let (actor, args) = make();
            let mailbox = mailbox.clone();
            async move {
                let (actor, _) = Actor::spawn_linked(None, actor, args, sup).await?;
                mailbox.point_at(actor.clone());
                Ok(actor.get_cell())
            }
            .boxed()
        });
        ChildSpec { name: name.into(), start, stop: Box::new(|cell, deadline| halt(cell, deadline).boxed()) }
    }

    /// Stops only after handling what it was sent: a group commit answers every submitter.
    pub fn flushed(self) -> ChildSpec {
        ChildSpec { stop: Box::new(|cell, deadline| drain(cell, deadline).boxed()), ..self }
    }

    /// A nested supervisor, stopped by asking it to stop its own children first.
    pub fn supervisor(spec: SupervisorSpec) -> ChildSpec {
        let name = spec.name.clone();
        let spec = std::sync::Arc::new(spec);
        let start: StartFn = Box::new(move |sup| {
            let spec = spec.clone();
            async move { Ok(Actor::spawn_linked(None, Supervisor, spec, sup).await?.0.get_cell()) }.boxed()
        });
        let stop: StopFn = Box::new(|cell, deadline| {
            async move {
                let sup: ActorRef<SupervisorMsg> = cell.clone().into();
                let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
                let _ = sup.call(|r| SupervisorMsg::Shutdown(deadline, r), Some(wait)).await;
                let _ = cell.stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5))).await;
            }
            .boxed()
        });
        ChildSpec { name, start, stop }
    }

    /// A child that stops its own way (a pool drains its jobs).
    pub fn with_start_and_stop(name: impl Into<String>, start: StartFn, stop: StopFn) -> ChildSpec {
        ChildSpec { name: name.into(), start, stop }
    }
}

/// Stops now (`post_stop` runs); killed at the deadline.
async fn halt(cell: ActorCell, deadline: Instant) {
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    if cell.stop_and_wait(Some("shutdown".into()), Some(wait)).await.is_err() {
        cell.kill();
    }
}

/// Processes what was sent before the stop, then stops; killed at the deadline.
async fn drain(cell: ActorCell, deadline: Instant) {
    let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    if cell.drain_and_wait(Some(wait)).await.is_err() {
        tracing::warn!(actor = %cell.get_id(), "did not stop within {wait:?}; killing it");
        cell.kill();
    }
}

/// A level of the tree: its children, in start order.
pub struct SupervisorSpec {
    pub name: String,
    pub policy: RestartPolicy,
    pub children: Vec<ChildSpec>,
}

pub enum SupervisorMsg {
    /// Sent to itself after the backoff of a child's death.
    Restart(usize),
    /// Orderly stop: children in reverse start order, each by the deadline.
    Shutdown(Instant, RpcReplyPort<()>),
}

pub struct SupervisorState {
    spec: std::sync::Arc<SupervisorSpec>,
    running: Vec<Option<ActorCell>>,
    tracker: RestartTracker,
    shutting_down: bool,
}

pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = std::sync::Arc<SupervisorSpec>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        spec: Self::Arguments,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut running = Vec::with_capacity(spec.children.len());
        for child in &spec.children {
            running.push(Some((child.start)(myself.get_cell()).await?));
        }
        let tracker = RestartTracker::new(spec.policy);
        Ok(SupervisorState { spec, running, tracker, shutting_down: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(_) if state.shutting_down => {}
            SupervisorMsg::Restart(i) => {
                let cell = (state.spec.children[i].start)(myself.get_cell()).await?;
                state.running[i] = Some(cell);
            }
            SupervisorMsg::Shutdown(deadline, reply) => {
                state.shutting_down = true;
                for (child, cell) in state.spec.children.iter().zip(&mut state.running).rev() {
                    if let Some(cell) = cell.take() {
                        tracing::debug!(supervisor = %state.spec.name, "stopping {}", child.name);
                        (child.stop)(cell, deadline).await;
                    }
                }
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // Every stop counts, a kill for a hang included: this supervisor sets
        // `shutting_down` before it stops a child on purpose.
        let (id, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell.get_id(), err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell.get_id(), reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        if state.shutting_down {
            return Ok(());
        }
        let Some(i) = state.running.iter().position(|c| c.as_ref().is_some_and(|c| c.get_id() == id)) else {
            return Ok(());
        };
        state.running[i] = None;
        let name = &state.spec.children[i].name;
        match state.tracker.on_failure(Instant::now()) {
            Some(delay) => {
                events::ActorRestarted { actor: name, reason: &reason, delay }.emit();
                myself.send_after(delay, move || SupervisorMsg::Restart(i));
                Ok(())
            }
            None => Err(format!("{}: {name} keeps dying ({reason}); giving up", state.spec.name).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Panics on every message; notes its stop.
    struct Child(&'static str, Arc<Mutex<Vec<&'static str>>>);

    impl Actor for Child {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
            panic!("{} fails", self.0)
        }
        async fn post_stop(&self, _: ActorRef<()>, _: &mut ()) -> Result<(), ActorProcessingErr> {
            self.1.lock().unwrap().push(self.0);
            Ok(())
        }
    }

    fn child(name: &'static str, mailbox: &Mailbox<()>, stops: &Arc<Mutex<Vec<&'static str>>>) -> ChildSpec {
        let stops = stops.clone();
        ChildSpec::actor(name, mailbox.clone(), move || (Child(name, stops.clone()), ()))
    }

    /// Waits (bounded) until the mailbox reaches an incarnation other than `last`.
    async fn next_incarnation(mailbox: &Mailbox<()>, last: Option<ractor::ActorId>) -> ractor::ActorId {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(a) = mailbox.actor().filter(|a| Some(a.get_id()) != last) {
                return a.get_id();
            }
            assert!(Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn a_child_that_keeps_dying_is_restarted_until_the_supervisor_gives_up() {
        let (mailbox, stops) = (Mailbox::new("child"), Arc::default());
        let policy = RestartPolicy { max_restarts: 2, window: Duration::from_secs(60), ..P };
        let spec = SupervisorSpec { name: "test".into(), policy, children: vec![child("a", &mailbox, &stops)] };
        let (_, done) = Actor::spawn(None, Supervisor, Arc::new(spec)).await.unwrap();
        let mut last = None;
        for _ in 0..3 {
            last = Some(next_incarnation(&mailbox, last).await);
            mailbox.send(()).unwrap();
        }
        // two restarts, then the third death takes the supervisor down to its parent
        tokio::time::timeout(Duration::from_secs(5), done).await.expect("the supervisor gave up").unwrap();
    }

    #[tokio::test]
    async fn a_shutdown_stops_children_in_reverse_start_order() {
        let stops = Arc::default();
        let children = vec![child("first", &Mailbox::new("1"), &stops), child("second", &Mailbox::new("2"), &stops)];
        let spec = SupervisorSpec { name: "test".into(), policy: P, children };
        let (sup, done) = Actor::spawn(None, Supervisor, Arc::new(spec)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        sup.call(|r| SupervisorMsg::Shutdown(deadline, r), Some(Duration::from_secs(5))).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), done).await.unwrap().unwrap();
        assert_eq!(*stops.lock().unwrap(), ["second", "first"]);
    }

    const P: RestartPolicy = RestartPolicy {
        max_restarts: 3,
        window: Duration::from_secs(10),
        backoff: Backoff::exponential(Duration::from_millis(100), Duration::from_millis(300)),
    };

    #[test]
    fn backs_off_then_escalates_within_the_window() {
        let mut t = RestartTracker::new(P);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            [t.on_failure(t0), t.on_failure(t0), t.on_failure(t0)],
            [Some(ms(100)), Some(ms(200)), Some(ms(300))]
        );
        assert_eq!(t.on_failure(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut t = RestartTracker::new(P);
        let t0 = Instant::now();
        for _ in 0..3 {
            t.on_failure(t0);
        }
        assert_eq!(t.on_failure(t0 + Duration::from_secs(11)), Some(Duration::from_millis(100)));
    }
}
