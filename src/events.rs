//! The WHEP server-sent events extension's state (draft-ietf-wish-whep core extensions):
//! which events each viewer's event streams want, what waits in them, and the registry the
//! hub keeps them in. The HTTP resources that create and read them are `crate::http::events`.
//!
//! The [`Registry`] lives in the hub's state, so an event stream is created against the same
//! view of the stream (publisher, viewers, layers) that later changes are announced against,
//! and whatever ends a session in the hub ends its event streams. Events wait in a bounded
//! queue per event stream until a long pull takes them; the viewer count is not queued but
//! read by the long pull when it changes, at most once a second.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::session::SessionId;

/// Event streams one WHEP session may have at once; a POST beyond gets 409.
pub const MAX_PER_SESSION: usize = 4;

/// Events kept for an event stream without a long pull; beyond, the oldest go.
pub const QUEUE: usize = 64;

/// A long pull announces the viewer count at most this often.
pub(crate) const VIEWERCOUNT_EVERY: Duration = Duration::from_secs(1);

/// The event types the gateway sends, in the order the `Link` advertises them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Active,
    Inactive,
    Layers,
    Reconnect,
    ViewerCount,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Active,
        EventKind::Inactive,
        EventKind::Layers,
        EventKind::Reconnect,
        EventKind::ViewerCount,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Active => "active",
            EventKind::Inactive => "inactive",
            EventKind::Layers => "layers",
            EventKind::Reconnect => "reconnect",
            EventKind::ViewerCount => "viewercount",
        }
    }

    /// Exactly the advertised spelling: the spec compares against the `events` attribute.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// One video layer (simulcast encoding or SVC layer) of a publication, as the `layers` event
/// of the WHEP server-sent events extension describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spatial_layer_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_layer_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_bitrate: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// How an event stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Open,
    /// Deliver what is queued (a `reconnect`), then end.
    Finishing,
    /// End now; the queue is dropped.
    Destroyed,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) queue: VecDeque<(EventKind, String)>,
    /// Events dropped from a full queue, reported when the next long pull starts.
    pub(crate) dropped: u64,
    /// The viewer count the last long pull sent; `None` before the first.
    pub(crate) viewers_sent: Option<usize>,
    /// When the next viewer count may be sent, whichever long pull sends it.
    pub(crate) viewers_due: Instant,
    /// The long pull that reads now: a newer GET replaces an older one.
    pub(crate) reader: u64,
    pub(crate) ending: Ending,
}

/// One event stream of a WHEP session.
#[derive(Debug)]
pub struct EventStream {
    pub(crate) session: SessionId,
    pub(crate) stream: Arc<str>,
    pub(crate) wanted: u8,
    /// The key of the `layers` data: the viewer's video m-line.
    pub(crate) mline: usize,
    pub(crate) inner: Mutex<Inner>,
    /// Bumped on every change a long pull must look at.
    pub(crate) changed: watch::Sender<u64>,
    /// The stream's viewer count, shared by its event streams.
    pub(crate) viewers: watch::Receiver<usize>,
}

impl EventStream {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.wanted & kind.bit() != 0
    }

    pub(crate) fn wake(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Queues `kind` with `data` if this stream asked for it.
    pub(crate) fn push(&self, kind: EventKind, data: impl FnOnce() -> String) {
        if !self.wants(kind) {
            return;
        }
        let mut inner = self.lock();
        if inner.ending != Ending::Open {
            return;
        }
        if inner.queue.len() >= QUEUE {
            inner.queue.pop_front();
            inner.dropped += 1;
        }
        inner.queue.push_back((kind, data()));
        drop(inner);
        self.wake();
    }

    /// Whether long pull `reader` must stop: replaced, or the stream destroyed.
    pub(crate) fn over_for(&self, reader: u64) -> bool {
        let inner = self.lock();
        inner.reader != reader || inner.ending == Ending::Destroyed
    }

    pub(crate) fn end(&self, how: Ending) {
        let mut inner = self.lock();
        if how == Ending::Destroyed {
            // A finishing stream keeps its last events for the long pull still reading.
            if inner.ending == Ending::Finishing {
                return;
            }
            inner.queue.clear();
        }
        inner.ending = how;
        drop(inner);
        self.wake();
    }

    pub(crate) fn layers_data(&self, layers: &[LayerInfo]) -> String {
        // A map of structs rather than a `Value`: the fields keep their documented order.
        let data = std::collections::BTreeMap::from([(self.mline.to_string(), layers)]);
        serde_json::to_string(&data).unwrap_or_else(|_| "{}".into())
    }
}

/// A stream's event streams and its viewer count as they see it.
#[derive(Debug)]
struct StreamEvents {
    viewers: watch::Sender<usize>,
    list: Vec<Arc<EventStream>>,
}

/// Why an event stream could not be created.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    NoSession,
    TooMany,
    /// The gateway is shutting down.
    Closing,
}

/// Every event stream, by id, by session and by stream. Kept in the hub's state: see the
/// module documentation.
#[derive(Debug, Default)]
pub struct Registry {
    by_id: HashMap<u128, Arc<EventStream>>,
    by_session: HashMap<SessionId, Vec<u128>>,
    by_stream: HashMap<Arc<str>, StreamEvents>,
    /// Set at shutdown, once every event stream was told to reconnect: no new ones.
    closing: bool,
}

/// What the hub knows of a stream when an event stream of it is created.
pub struct StreamView<'a> {
    pub active: bool,
    pub viewers: usize,
    pub layers: &'a [LayerInfo],
}

impl Registry {
    /// Creates an event stream for `session` (a viewer of `stream`) with the `wanted` kinds,
    /// and queues what a new one starts with: `active` if there is a publication, `layers`
    /// if they are known; the viewer count follows on the first long pull.
    pub fn open(
        &mut self,
        session: SessionId,
        stream: &Arc<str>,
        mline: usize,
        wanted: &[EventKind],
        view: StreamView<'_>,
    ) -> Result<u128, OpenError> {
        if self.closing {
            return Err(OpenError::Closing);
        }
        let ids = self.by_session.entry(session).or_default();
        if ids.len() >= MAX_PER_SESSION {
            return Err(OpenError::TooMany);
        }
        let id: u128 = rand::random();
        ids.push(id);
        let entry = self
            .by_stream
            .entry(stream.clone())
            .or_insert_with(|| StreamEvents {
                viewers: watch::channel(view.viewers).0,
                list: Vec::new(),
            });
        entry.viewers.send_replace(view.viewers);
        let es = Arc::new(EventStream {
            session,
            stream: stream.clone(),
            wanted: wanted.iter().fold(0, |b, k| b | k.bit()),
            mline,
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dropped: 0,
                viewers_sent: None,
                viewers_due: Instant::now(),
                reader: 0,
                ending: Ending::Open,
            }),
            changed: watch::channel(0).0,
            viewers: entry.viewers.subscribe(),
        });
        if view.active {
            es.push(EventKind::Active, || "{}".into());
        }
        if !view.layers.is_empty() {
            es.push(EventKind::Layers, || es.layers_data(view.layers));
        }
        entry.list.push(es.clone());
        self.by_id.insert(id, es);
        Ok(id)
    }

    /// Event stream `id` of `session`, if it is still open.
    pub fn get(&self, session: SessionId, id: u128) -> Option<Arc<EventStream>> {
        self.by_id
            .get(&id)
            .filter(|e| e.session == session)
            .cloned()
    }

    /// Forgets event stream `id` and ends its long pull: its queue is dropped.
    pub fn delete(&mut self, session: SessionId, id: u128) -> bool {
        if self.get(session, id).is_none() {
            return false;
        }
        self.take(id, Ending::Destroyed);
        true
    }

    fn take(&mut self, id: u128, how: Ending) {
        let Some(es) = self.by_id.remove(&id) else {
            return;
        };
        if let Some(ids) = self.by_session.get_mut(&es.session) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_session.remove(&es.session);
            }
        }
        if let Some(s) = self.by_stream.get_mut(&es.stream) {
            s.list.retain(|e| !Arc::ptr_eq(e, &es));
            if s.list.is_empty() {
                self.by_stream.remove(&es.stream);
            }
        }
        es.end(how);
    }

    /// The session ended: its event streams go, and their long pulls end.
    pub fn session_ended(&mut self, session: SessionId) {
        for id in self.by_session.get(&session).cloned().unwrap_or_default() {
            self.take(id, Ending::Destroyed);
        }
    }

    /// The gateway is about to end `session` for its own reasons: its event streams get
    /// `reconnect`, which an open long pull delivers before it ends.
    pub fn reconnect_session(&mut self, session: SessionId) {
        for id in self.by_session.get(&session).cloned().unwrap_or_default() {
            if let Some(es) = self.by_id.get(&id) {
                es.push(EventKind::Reconnect, || "{}".into());
            }
            self.take(id, Ending::Finishing);
        }
    }

    /// [`Registry::reconnect_session`] for every session: the gateway is shutting down.
    pub fn reconnect_all(&mut self) {
        self.closing = true;
        let sessions: Vec<SessionId> = self.by_session.keys().copied().collect();
        for s in sessions {
            self.reconnect_session(s);
        }
    }

    /// Queues `kind` (with empty data) for every event stream of `stream`.
    pub fn announce(&self, stream: &str, kind: EventKind) {
        for es in self.of(stream) {
            es.push(kind, || "{}".into());
        }
    }

    /// Queues `layers` for every event stream of `stream`.
    pub fn layers(&self, stream: &str, layers: &[LayerInfo]) {
        for es in self.of(stream) {
            es.push(EventKind::Layers, || es.layers_data(layers));
        }
    }

    /// The stream's viewer count is now `n`.
    pub fn viewers(&self, stream: &str, n: usize) {
        if let Some(s) = self.by_stream.get(stream) {
            s.viewers.send_if_modified(|v| std::mem::replace(v, n) != n);
        }
    }

    fn of(&self, stream: &str) -> impl Iterator<Item = &Arc<EventStream>> {
        self.by_stream.get(stream).into_iter().flat_map(|s| &s.list)
    }

    /// Open event streams, for tests and metrics.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
