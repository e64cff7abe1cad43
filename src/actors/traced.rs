//! The envelope every actor message travels in: the message, the caller's
//! span (so the trace hierarchy survives the hop to the actor's thread) and
//! the message's admission ticket.

use actix::Message;
use tracing::Span;

use super::admission::Ticket;

/// A message on its way to an actor, with the caller's span as parent.
pub struct Traced<M> {
    msg: M,
    parent: Span,
    ticket: Ticket,
}

impl<M: Message> Message for Traced<M> {
    type Result = M::Result;
}

impl<M> Traced<M> {
    /// Wraps `msg` within the current span.
    pub fn new(msg: M, ticket: Ticket) -> Self {
        Self { msg, parent: Span::current(), ticket }
    }

    /// Takes the message out on the actor's side: returns it with a child span
    /// (`<Actor>.<Message>`, queue wait recorded) and the ticket, which the
    /// handler keeps alive until its reply is ready.
    pub fn open(self) -> (M, Span, Ticket) {
        let Self { msg, parent, mut ticket } = self;
        let waited = ticket.start();
        let span = crate::child_span!(
            parent: &parent,
            "actor.message",
            otel.name = %format_args!("{}.{}", ticket.actor(), ticket.message()),
            actor = ticket.actor(),
            message = ticket.message(),
            queue_wait_us = waited.as_micros() as u64,
        );
        (msg, span, ticket)
    }
}
