//! The simulated channels between shards: each [`PeerMsg`] can be delivered at once, delayed
//! (so messages reorder), or dropped, by a rule that sees it as a [`ShardMessage`]; and each
//! shard's media queue holds at most [`Sim::message_capacity`] delayed packets, as the real
//! bounded media channel does, so a rule that holds media back can overfill it. Control
//! messages go on the real unbounded control channel, so they never overflow here either.

use super::*;

/// What a shard-to-shard message is, for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    Media,
    Gop,
    Subscribe,
    Unsubscribe,
    KeyframeRequest,
    PublisherLeft,
    PublisherStarted,
}

impl MessageKind {
    pub fn of(msg: &PeerMsg) -> MessageKind {
        match msg {
            PeerMsg::Media { .. } => MessageKind::Media,
            PeerMsg::Gop { .. } => MessageKind::Gop,
            PeerMsg::Subscribe { .. } => MessageKind::Subscribe,
            PeerMsg::Unsubscribe { .. } => MessageKind::Unsubscribe,
            PeerMsg::KeyframeRequest { .. } => MessageKind::KeyframeRequest,
            PeerMsg::PublisherLeft { .. } => MessageKind::PublisherLeft,
            PeerMsg::PublisherStarted { .. } => MessageKind::PublisherStarted,
        }
    }

    /// Control messages (everything but media): losing one leaves a shard's view of a stream
    /// wrong until something repairs it.
    pub fn is_control(self) -> bool {
        self != MessageKind::Media
    }
}

fn stream_of(msg: &PeerMsg) -> &str {
    match msg {
        PeerMsg::Media { stream, .. }
        | PeerMsg::Gop { stream, .. }
        | PeerMsg::Subscribe { stream, .. }
        | PeerMsg::Unsubscribe { stream, .. }
        | PeerMsg::KeyframeRequest { stream, .. }
        | PeerMsg::PublisherLeft { stream, .. }
        | PeerMsg::PublisherStarted { stream, .. } => stream,
    }
}

/// A message about to go from one shard to another, as the message rule sees it.
#[derive(Debug)]
pub struct ShardMessage<'a> {
    /// When it is sent.
    pub at: Instant,
    pub from: usize,
    pub to: usize,
    pub kind: MessageKind,
    pub stream: &'a str,
    /// How many messages went from `from` to `to` before this one (dropped ones included).
    pub nth: u64,
}

/// What happens to a shard-to-shard message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    /// Delivered this much later; later messages may overtake it.
    Delay(Duration),
}

pub(super) type MessageRule = Box<dyn FnMut(&ShardMessage<'_>) -> Fate>;

/// A delayed message for shard `to`.
pub(super) struct HeldMessage {
    pub(super) to: usize,
    pub(super) msg: PeerMsg,
}

/// What the shard channels did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageStats {
    pub delivered: u64,
    /// Dropped by the rule.
    pub dropped: u64,
    /// Media dropped because the receiving shard's media queue was full.
    pub overflowed: u64,
    pub delayed: u64,
}

impl Sim {
    /// Decides the fate of every shard-to-shard message with `rule` from now on.
    pub fn set_message_rule(&mut self, rule: impl FnMut(&ShardMessage<'_>) -> Fate + 'static) {
        self.message_rule = Some(Box::new(rule));
    }

    pub fn clear_message_rule(&mut self) {
        self.message_rule = None;
    }

    /// What the shard channels did so far.
    pub fn message_stats(&self) -> &MessageStats {
        &self.message_stats
    }

    /// Hands every pending message over (rule permitting), and what the receivers send on.
    pub(super) fn pump_messages(&mut self) {
        let now = self.now;
        while let Some((from, to, msg)) = self.messages.pop_front() {
            if to >= self.engines.len() {
                continue;
            }
            let kind = MessageKind::of(&msg);
            let fate = match self.message_rule.as_mut() {
                None => Fate::Deliver,
                Some(rule) => {
                    let nth = &mut self.message_counts[from * self.engines.len() + to];
                    let m = ShardMessage {
                        at: now,
                        from,
                        to,
                        kind,
                        stream: stream_of(&msg),
                        nth: *nth,
                    };
                    *nth += 1;
                    rule(&m)
                }
            };
            self.log_message(from, to, &msg, fate);
            match fate {
                Fate::Drop => self.message_stats.dropped += 1,
                Fate::Delay(d) if d > Duration::ZERO => {
                    let media = !kind.is_control();
                    if media && self.held_per_shard[to] >= self.message_capacity {
                        self.message_stats.overflowed += 1;
                        continue;
                    }
                    if media {
                        self.held_per_shard[to] += 1;
                    }
                    self.message_stats.delayed += 1;
                    self.order += 1;
                    self.held.push(Reverse(Due {
                        at: now + d,
                        order: self.order,
                        item: HeldMessage { to, msg },
                    }));
                }
                _ => self.hand_over(to, msg),
            }
        }
    }

    fn hand_over(&mut self, to: usize, msg: PeerMsg) {
        let now = self.now;
        let t0 = Instant::now();
        self.engines[to].handle_message(now, msg);
        self.engine_busy[to] += t0.elapsed();
        self.engine_calls += 1;
        self.message_stats.delivered += 1;
        self.collect_engine(to);
    }

    /// Delivers the delayed messages that are due; true if there were any.
    pub(super) fn deliver_held(&mut self) -> bool {
        let mut any = false;
        while self.held.peek().is_some_and(|Reverse(h)| h.at <= self.now) {
            let Some(Reverse(h)) = self.held.pop() else {
                break;
            };
            let HeldMessage { to, msg } = h.item;
            if !MessageKind::of(&msg).is_control() {
                self.held_per_shard[to] -= 1;
            }
            self.hand_over(to, msg);
            self.pump_messages();
            any = true;
        }
        any
    }

    pub(super) fn next_held(&self) -> Option<Instant> {
        self.held.peek().map(|Reverse(h)| h.at)
    }
}
