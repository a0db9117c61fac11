//! A handle to an actor that outlives the actor's restarts. Senders are given one at
//! construction; the supervisor points it at each new incarnation, so a restarted actor is
//! reachable again as soon as it is up (quickwit's mailboxes survive restarts the same way)
//! and no one looks actors up by name per message.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

pub struct Mailbox<M> {
    target: Arc<RwLock<Option<ActorRef<M>>>>,
    /// For messages: what this handle reaches.
    name: &'static str,
}

impl<M> Clone for Mailbox<M> {
    fn clone(&self) -> Self {
        Mailbox { target: self.target.clone(), name: self.name }
    }
}

/// The actor behind a mailbox is not there: it is restarting, or it has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("{0} is restarting")]
    Restarting(&'static str),
    #[error("{0} did not answer within {1:?}")]
    Timeout(&'static str, Duration),
}

impl<M: Message> Mailbox<M> {
    pub fn new(name: &'static str) -> Self {
        Mailbox { target: Arc::default(), name }
    }

    /// The actor now, if it is up.
    pub fn actor(&self) -> Option<ActorRef<M>> {
        self.target.read().ok().and_then(|t| t.clone())
    }

    pub(crate) fn point_at(&self, actor: ActorRef<M>) {
        if let Ok(mut t) = self.target.write() {
            *t = Some(actor);
        }
    }

    /// Fire and forget; a message to an actor that is restarting is lost.
    pub fn send(&self, msg: M) -> Result<(), Unreachable> {
        let actor = self.actor().ok_or(Unreachable::Restarting(self.name))?;
        actor.send_message(msg).map_err(|_| Unreachable::Restarting(self.name))
    }

    /// Sends a request and waits for its answer, at most `timeout`.
    pub async fn call<R: Send + 'static>(
        &self,
        request: impl FnOnce(RpcReplyPort<R>) -> M,
        timeout: Duration,
    ) -> Result<R, Unreachable> {
        let actor = self.actor().ok_or(Unreachable::Restarting(self.name))?;
        match actor.call(request, Some(timeout)).await {
            Ok(CallResult::Success(answer)) => Ok(answer),
            Ok(CallResult::Timeout) => Err(Unreachable::Timeout(self.name, timeout)),
            _ => Err(Unreachable::Restarting(self.name)),
        }
    }
}
