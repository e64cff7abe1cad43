//! [`ActorClient`]: the only way to message an actor. Bounded (see
//! `admission`), traced (see `traced`), and it fails fast.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use actix::{Actor, Addr, Handler, MailboxError, Message, dev::ToEnvelope};

use super::{
    admission::{Admission, Ticket},
    stats::ActorStats,
    traced::Traced,
};
use crate::error::CallError;

/// An actor may run as several instances (one per worker); a message goes to
/// the instance on the caller's worker, so it never leaves the thread, or,
/// from any other thread, to the instances in turn.
pub struct ActorClient<A: Actor> {
    instances: Arc<[Addr<A>]>,
    next: Arc<AtomicUsize>,
    stats: Arc<ActorStats>,
}

impl<A: Actor> Clone for ActorClient<A> {
    fn clone(&self) -> Self {
        Self {
            instances: Arc::clone(&self.instances),
            next: Arc::clone(&self.next),
            stats: Arc::clone(&self.stats),
        }
    }
}

impl<A: Actor> ActorClient<A> {
    pub fn new(addr: Addr<A>, stats: Arc<ActorStats>) -> Self {
        Self::sharded(vec![addr], stats)
    }

    /// A client for instances `addrs[i]` running on worker `i`.
    pub fn sharded(addrs: Vec<Addr<A>>, stats: Arc<ActorStats>) -> Self {
        Self { instances: addrs.into(), next: Arc::new(AtomicUsize::new(0)), stats }
    }

    pub fn stats(&self) -> &Arc<ActorStats> {
        &self.stats
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    fn pick(&self) -> &Addr<A> {
        let n = self.instances.len();
        let index = match crate::workers::current() {
            Some(worker) if worker < n => worker,
            _ if n == 1 => 0,
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.instances[index]
    }

    /// Sends `msg` within the current span. A full mailbox is refused at
    /// once (`Overloaded`); a stopped actor is `Stopped`.
    pub async fn call<M>(&self, msg: M) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        self.send(self.pick(), msg, Admission::Bounded).await
    }

    /// Sends a copy of `msg` to every instance, outside the capacity bound
    /// (health probes), and returns their answers in instance order.
    pub async fn call_each<M>(&self, msg: M) -> Vec<Result<M::Result, CallError>>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let calls =
            self.instances.iter().map(|addr| self.send(addr, msg.clone(), Admission::Always));
        futures_util::future::join_all(calls).await
    }

    async fn send<M>(
        &self,
        addr: &Addr<A>,
        msg: M,
        admission: Admission,
    ) -> Result<M::Result, CallError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<Traced<M>>,
        A::Context: ToEnvelope<A, Traced<M>>,
    {
        let name = self.stats.name();
        let ticket = Ticket::admit(&self.stats, short_type_name::<M>(), admission)
            .ok_or(CallError::Overloaded(name))?;
        addr.send(Traced::new(msg, ticket)).await.map_err(|err| match err {
            MailboxError::Closed => CallError::Stopped(name),
            // Only `send(..).timeout(..)` yields this; admission above already
            // bounds the wait, so it would mean the same: too busy.
            MailboxError::Timeout => CallError::Overloaded(name),
        })
    }
}

/// A message's name as metrics and spans label it: its type's last segment.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_short() {
        struct CreateUser;
        assert_eq!(short_type_name::<CreateUser>(), "CreateUser");
    }
}
