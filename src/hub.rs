//! The directory shared by the control plane and the shards: which streams have a publisher and on
//! which shard, which shards have viewers of each stream, and where each session lives.
//!
//! It changes only when sessions come and go, never per packet: a publisher's shard keeps its own
//! copy of the subscriber set and is told about changes by message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::events::{EventKind, OpenError, Registry, StreamView};
use crate::session::{Role, SessionId};

/// Where a session lives, for routing PATCH/DELETE to its shard.
#[derive(Clone, Debug)]
pub struct SessionEntry {
    pub shard: usize,
    pub stream: Arc<str>,
    pub role: Role,
    /// SHA-256 of the bearer token that created the session, when auth is on and one was sent:
    /// only that token (or an admin) may PATCH or DELETE it. The token itself is never kept.
    pub owner: Option<[u8; 32]>,
    /// The session's local ICE ufrag, once its shard has made it (see [`HubState::ufrags`]).
    pub ufrag: Option<String>,
    /// A viewer's first video m-line in its SDP, which keys the `layers` event.
    pub video_mline: Option<usize>,
}

pub use crate::events::LayerInfo;

/// The publisher of a stream.
#[derive(Clone, Debug)]
pub struct PublisherEntry {
    pub session: SessionId,
    pub shard: usize,
    /// Codec names (upper-case SDP names) the publisher sends, known after its offer.
    pub video_codecs: Vec<String>,
    pub audio_codecs: Vec<String>,
    /// Its H264 may come in packetization mode 1, which mode-0 viewers cannot take.
    pub h264_mode1: bool,
}

/// A stream as the directory knows it; the API adds the shards' figures.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StreamSummary {
    pub name: String,
    /// A publisher is connected or connecting.
    pub live: bool,
    pub viewers: usize,
    /// The publisher's negotiated codecs (upper-case SDP names); empty without a publisher.
    pub video_codecs: Vec<String>,
    pub audio_codecs: Vec<String>,
}

impl StreamSummary {
    fn new(name: &str, s: &StreamEntry, viewers: usize) -> StreamSummary {
        let p = s.publisher.as_ref();
        StreamSummary {
            name: name.to_string(),
            live: p.is_some(),
            viewers,
            video_codecs: p.map(|p| p.video_codecs.clone()).unwrap_or_default(),
            audio_codecs: p.map(|p| p.audio_codecs.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct StreamEntry {
    pub publisher: Option<PublisherEntry>,
    /// Bit k set: shard k has viewers of this stream and wants its packets.
    pub viewer_shards: u64,
    /// Viewer sessions of this stream.
    pub viewers: usize,
    /// The publisher's session exists on its shard, and viewers' event streams were told.
    pub active: bool,
    /// The publication's video layers, once the data plane reports them.
    pub layers: Vec<LayerInfo>,
}

#[derive(Debug, Default)]
pub struct HubState {
    pub streams: HashMap<Arc<str>, StreamEntry>,
    pub sessions: HashMap<SessionId, SessionEntry>,
    /// Sessions per shard, for choosing where a new one goes.
    pub per_shard: Vec<usize>,
    /// Per shard: the fraction of the last measurement window its thread was busy.
    pub load: Vec<f64>,
    /// Per shard: its sessions when `load` was measured, and sessions placed on it since.
    /// Admission predicts a shard's load from these, so a burst of joins inside one window
    /// cannot overshoot the threshold before the next measurement shows their cost.
    pub sessions_at_load: Vec<usize>,
    pub placed_since_load: Vec<usize>,
    pub publishers: usize,
    pub viewers: usize,
    /// The latest sessions their peers closed themselves, oldest first, at most
    /// [`CLOSED_REMEMBERED`]: their DELETE may arrive just after.
    pub closed: std::collections::VecDeque<(SessionId, SessionEntry)>,
    /// Each live session's local ICE ufrag and its shard: an ICE-TCP connection, which comes
    /// in on the node's one TCP port, goes to the shard its first check names. Kept with the
    /// session's entry, so whatever removes the session removes its ufrag.
    pub ufrags: HashMap<String, usize>,
    /// The viewers' server-sent event streams: whatever changes a stream here tells them.
    pub events: Registry,
}

impl HubState {
    /// Shard `k`'s load as measured, plus what the sessions placed on it since will add, at
    /// the measured cost per session.
    fn predicted_load(&self, k: usize) -> f64 {
        let load = self.load.get(k).copied().unwrap_or(0.0);
        let per_session = load / self.sessions_at_load.get(k).copied().unwrap_or(0).max(1) as f64;
        load + per_session * self.placed_since_load.get(k).copied().unwrap_or(0) as f64
    }
}

/// How many peer-closed sessions the hub remembers for their late DELETE.
pub const CLOSED_REMEMBERED: usize = 1024;

/// Where a newly registered session goes, and what its shard needs to know.
#[derive(Clone, Debug)]
pub struct Placement {
    pub shard: usize,
    /// The stream's name as the directory and the shards share it.
    pub stream: Arc<str>,
    /// The stream's publisher (for WHIP, the new session itself).
    pub publisher: Option<PublisherEntry>,
}

/// Why a session cannot be registered.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimError {
    PublisherExists,
    NoPublisher,
    Full,
    /// Every shard's measured load is at or above `limits.max_shard_load`.
    Overloaded,
}

#[derive(Debug, Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

impl Hub {
    pub fn new(shards: usize) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                per_shard: vec![0; shards],
                load: vec![0.0; shards],
                sessions_at_load: vec![0; shards],
                placed_since_load: vec![0; shards],
                ..HubState::default()
            }),
        }
    }

    /// The shard whose session has local ICE ufrag `ufrag`.
    pub fn shard_for_ufrag(&self, ufrag: &str) -> Option<usize> {
        self.lock().ufrags.get(ufrag).copied()
    }

    /// Session `id` now runs on local ICE ufrag `ufrag` (created, or ICE restarted); its
    /// previous one is gone. Nothing for a session the directory no longer has.
    pub fn set_ufrag(&self, id: SessionId, ufrag: String) {
        let mut st = self.lock();
        let Some(entry) = st.sessions.get_mut(&id) else {
            return;
        };
        let shard = entry.shard;
        if let Some(old) = entry.ufrag.replace(ufrag.clone()) {
            st.ufrags.remove(&old);
        }
        st.ufrags.insert(ufrag, shard);
    }

    /// Locks the directory. A poisoned lock is taken anyway: every update keeps it consistent.
    pub fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn session_count(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn session(&self, id: SessionId) -> Option<SessionEntry> {
        self.lock().sessions.get(&id).cloned()
    }

    /// Records the hash of the token that created session `id` (no-op if it is gone).
    pub fn set_owner(&self, id: SessionId, owner: [u8; 32]) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.owner = Some(owner);
        }
    }

    /// Registers a new session on the least-loaded shard, claiming the publisher slot for WHIP.
    /// For WHEP, `require_publisher` refuses streams that have none (409 at the HTTP layer).
    pub fn register(
        &self,
        id: SessionId,
        stream: &str,
        role: Role,
        limits: &crate::config::LimitsConfig,
        publisher_codecs: (Vec<String>, Vec<String>),
    ) -> Result<Placement, ClaimError> {
        let mut st = self.lock();
        let full = st.sessions.len() >= limits.max_sessions
            || match role {
                Role::Publish => st.publishers >= limits.max_publishers,
                Role::Play => {
                    st.viewers >= limits.max_viewers
                        || st
                            .streams
                            .get(stream)
                            .is_some_and(|s| s.viewers >= limits.max_viewers_per_stream)
                }
            };
        if full {
            return Err(ClaimError::Full);
        }
        // The shard with the fewest sessions among those with room by their predicted load.
        let max_load = limits.max_shard_load;
        let shard = st
            .per_shard
            .iter()
            .enumerate()
            .filter(|(i, _)| max_load >= 1.0 || st.predicted_load(*i) < max_load)
            .min_by_key(|(_, n)| **n)
            .map(|(i, _)| i)
            .ok_or(ClaimError::Overloaded)?;
        let key: Arc<str> = match st.streams.get_key_value(stream) {
            Some((k, _)) => k.clone(),
            None => Arc::from(stream),
        };
        let entry = st.streams.entry(key.clone()).or_default();
        let publisher = match role {
            Role::Publish => {
                if entry.publisher.is_some() {
                    return Err(ClaimError::PublisherExists);
                }
                let p = PublisherEntry {
                    session: id,
                    shard,
                    video_codecs: publisher_codecs.0,
                    audio_codecs: publisher_codecs.1,
                    h264_mode1: false,
                };
                entry.publisher = Some(p.clone());
                Some(p)
            }
            Role::Play => {
                let Some(p) = entry.publisher.clone() else {
                    if entry.viewer_shards == 0 && entry.viewers == 0 {
                        st.streams.remove(stream);
                    }
                    return Err(ClaimError::NoPublisher);
                };
                Some(p)
            }
        };
        st.sessions.insert(
            id,
            SessionEntry {
                shard,
                stream: key.clone(),
                role,
                owner: None,
                ufrag: None,
                video_mline: None,
            },
        );
        st.per_shard[shard] += 1;
        st.placed_since_load[shard] += 1;
        match role {
            Role::Publish => st.publishers += 1,
            Role::Play => {
                st.viewers += 1;
                let st = &mut *st;
                if let Some(s) = st.streams.get_mut(stream) {
                    s.viewers += 1;
                    st.events.viewers(stream, s.viewers);
                }
            }
        }
        Ok(Placement {
            shard,
            stream: key,
            publisher,
        })
    }

    /// The sessions on shard `shard`, in id order.
    pub fn sessions_on(&self, shard: usize) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = self
            .lock()
            .sessions
            .iter()
            .filter(|(_, s)| s.shard == shard)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids
    }

    /// The streams shard `shard` has viewers of, by name.
    pub fn streams_watched_by(&self, shard: usize) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self
            .lock()
            .streams
            .iter()
            .filter(|(_, s)| s.viewer_shards & (1 << shard) != 0)
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Records shard `shard`'s measured load (busy fraction of its last window).
    pub fn set_load(&self, shard: usize, load: f64) {
        let mut st = self.lock();
        let st = &mut *st;
        if let (Some(l), Some(&n)) = (st.load.get_mut(shard), st.per_shard.get(shard)) {
            *l = load;
            st.sessions_at_load[shard] = n;
            st.placed_since_load[shard] = 0;
        }
    }

    /// Every shard's last measured load.
    pub fn loads(&self) -> Vec<f64> {
        self.lock().load.clone()
    }

    /// Remembers that session `id` was closed by its peer (call before [`Hub::unregister`]).
    pub fn remember_closed(&self, id: SessionId) {
        let mut st = self.lock();
        let Some(entry) = st.sessions.get(&id).cloned() else {
            return;
        };
        if st.closed.len() >= CLOSED_REMEMBERED {
            st.closed.pop_front();
        }
        st.closed.push_back((id, entry));
    }

    /// Whether `id` is a `role` session of `stream` that its peer closed not long ago (among
    /// the last [`CLOSED_REMEMBERED`]); it is forgotten, so a second DELETE finds nothing.
    pub fn take_closed(&self, id: SessionId, role: Role, stream: &str) -> bool {
        let mut st = self.lock();
        let at = st
            .closed
            .iter()
            .position(|(c, e)| *c == id && e.role == role && *e.stream == *stream);
        at.and_then(|at| st.closed.remove(at)).is_some()
    }

    /// Forgets a session; for a publisher also frees the stream's publisher slot.
    /// Returns the stream and the shards with viewers of it when a publisher left, so they can
    /// be told.
    pub fn unregister(&self, id: SessionId) -> Option<(Arc<str>, u64)> {
        let mut st = self.lock();
        let entry = st.sessions.remove(&id)?;
        if let Some(ufrag) = &entry.ufrag {
            st.ufrags.remove(ufrag);
        }
        if let Some(n) = st.per_shard.get_mut(entry.shard) {
            *n = n.saturating_sub(1);
        }
        match entry.role {
            Role::Publish => st.publishers = st.publishers.saturating_sub(1),
            Role::Play => st.viewers = st.viewers.saturating_sub(1),
        }
        let mut notify = None;
        let st = &mut *st;
        if entry.role == Role::Play {
            st.events.session_ended(id);
        }
        if let Some(s) = st.streams.get_mut(&entry.stream) {
            if entry.role == Role::Play {
                s.viewers = s.viewers.saturating_sub(1);
                st.events.viewers(&entry.stream, s.viewers);
            }
            if entry.role == Role::Publish && s.publisher.as_ref().map(|p| p.session) == Some(id) {
                s.publisher = None;
                s.layers.clear();
                if std::mem::take(&mut s.active) {
                    st.events.announce(&entry.stream, EventKind::Inactive);
                }
                notify = Some((entry.stream.clone(), s.viewer_shards));
            }
            if s.publisher.is_none() && s.viewer_shards == 0 && s.viewers == 0 {
                st.streams.remove(&entry.stream);
            }
        }
        notify
    }

    /// Marks shard `shard` as wanting (or no longer wanting) the packets of `stream`; returns the
    /// publisher's shard so the caller can tell it.
    pub fn set_viewer_shard(&self, stream: &Arc<str>, shard: usize, wants: bool) -> Option<usize> {
        let mut st = self.lock();
        let entry = st.streams.entry(stream.clone()).or_default();
        if wants {
            entry.viewer_shards |= 1 << shard;
        } else {
            entry.viewer_shards &= !(1 << shard);
        }
        let publisher = entry.publisher.as_ref().map(|p| p.shard);
        if entry.publisher.is_none() && entry.viewer_shards == 0 && entry.viewers == 0 {
            st.streams.remove(stream);
        }
        publisher
    }

    /// Records the codecs a publisher negotiated, so viewers that cannot decode them get 422.
    pub fn set_publisher_codecs(
        &self,
        stream: &str,
        id: SessionId,
        video: Vec<String>,
        audio: Vec<String>,
        h264_mode1: bool,
    ) {
        let mut st = self.lock();
        if let Some(p) = st
            .streams
            .get_mut(stream)
            .and_then(|s| s.publisher.as_mut())
        {
            if p.session == id {
                // One entry per codec, not per payload type: an offer lists H264 once for each
                // profile and packetization mode.
                p.video_codecs = unique(video);
                p.audio_codecs = unique(audio);
                p.h264_mode1 = h264_mode1;
            }
        }
    }

    /// Publisher `id` of `stream` runs on its shard now: the stream's viewers are told it is
    /// active (once per publisher, whichever path reports it).
    pub fn publisher_active(&self, stream: &str, id: SessionId) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(s) = st.streams.get_mut(stream) else {
            return;
        };
        if s.publisher.as_ref().map(|p| p.session) == Some(id) && !s.active {
            s.active = true;
            st.events.announce(stream, EventKind::Active);
        }
    }

    /// Records the video layers `stream` is published with; its viewers' event streams get a
    /// `layers` event when they changed. Nothing for a stream without a publisher.
    pub fn set_layers(&self, stream: &str, layers: Vec<LayerInfo>) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(s) = st.streams.get_mut(stream) else {
            return;
        };
        if s.publisher.is_none() || s.layers == layers {
            return;
        }
        s.layers = layers;
        st.events.layers(stream, &s.layers);
    }

    /// Records viewer `id`'s video m-line index (see [`SessionEntry::video_mline`]).
    pub fn set_video_mline(&self, id: SessionId, mline: usize) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.video_mline = Some(mline);
        }
    }

    /// Creates an event stream for viewer `id` against the stream as it is now (see
    /// [`Registry::open`]).
    pub fn open_events(&self, id: SessionId, wanted: &[EventKind]) -> Result<u128, OpenError> {
        let mut st = self.lock();
        let st = &mut *st;
        let session = st
            .sessions
            .get(&id)
            .filter(|s| s.role == Role::Play)
            .ok_or(OpenError::NoSession)?;
        let stream = session.stream.clone();
        let mline = session.video_mline.unwrap_or(0);
        let s = st.streams.get(&stream);
        let view = StreamView {
            active: s.is_some_and(|s| s.active),
            viewers: s.map_or(0, |s| s.viewers),
            layers: s.map_or(&[][..], |s| &s.layers[..]),
        };
        st.events.open(id, &stream, mline, wanted, view)
    }

    /// Event stream `event` of viewer `id`, while it is open.
    pub fn event_stream(
        &self,
        id: SessionId,
        event: u128,
    ) -> Option<Arc<crate::events::EventStream>> {
        self.lock().events.get(id, event)
    }

    /// Ends event stream `event` of viewer `id`; false if there is none.
    pub fn delete_events(&self, id: SessionId, event: u128) -> bool {
        self.lock().events.delete(id, event)
    }

    /// The gateway is about to end viewer `id` (shed under overload): its event streams send
    /// `reconnect` and end.
    pub fn reconnect_viewer(&self, id: SessionId) {
        self.lock().events.reconnect_session(id);
    }

    /// The gateway is shutting down: every event stream sends `reconnect` and ends.
    pub fn reconnect_all(&self) {
        self.lock().events.reconnect_all();
    }

    /// Every stream with a publisher or viewers, by name.
    pub fn streams(&self) -> Vec<StreamSummary> {
        let st = self.lock();
        let mut out: std::collections::BTreeMap<&str, StreamSummary> = st
            .streams
            .iter()
            .map(|(name, s)| (&**name, StreamSummary::new(name, s, 0)))
            .collect();
        for entry in st.sessions.values() {
            if entry.role == Role::Play {
                if let Some(s) = out.get_mut(&*entry.stream) {
                    s.viewers += 1;
                }
            }
        }
        out.into_values().collect()
    }

    /// One stream as [`Hub::streams`] lists it, with the key the shards know it by.
    pub fn stream(&self, name: &str) -> Option<(Arc<str>, StreamSummary)> {
        let st = self.lock();
        let (key, s) = st.streams.get_key_value(name)?;
        Some((key.clone(), StreamSummary::new(name, s, s.viewers)))
    }

    /// Shards with viewers of `stream`, read by a publisher's shard when the publisher starts.
    pub fn viewer_shards(&self, stream: &str) -> u64 {
        self.lock()
            .streams
            .get(stream)
            .map(|s| s.viewer_shards)
            .unwrap_or(0)
    }

    pub fn publisher_shard(&self, stream: &str) -> Option<usize> {
        self.lock()
            .streams
            .get(stream)
            .and_then(|s| s.publisher.as_ref().map(|p| p.shard))
    }
}

/// `names` in their first order, each once.
fn unique(mut names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_ufrag_routes_to_its_shard_until_restart_or_removal() {
        let hub = Hub::new(2);
        let limits = crate::config::LimitsConfig::default();
        let none = (Vec::new(), Vec::new());
        let shard = hub
            .register(SessionId(1), "s", Role::Publish, &limits, none)
            .expect("publisher")
            .shard;
        hub.set_ufrag(SessionId(1), "first".into());
        assert_eq!(hub.shard_for_ufrag("first"), Some(shard));
        // An ICE restart replaces it.
        hub.set_ufrag(SessionId(1), "second".into());
        assert_eq!(hub.shard_for_ufrag("first"), None);
        assert_eq!(hub.shard_for_ufrag("second"), Some(shard));
        // Removal takes it, whoever removes the session (its shard, or a crashed shard's
        // clean-up, which sends no ufrag update).
        hub.unregister(SessionId(1));
        assert_eq!(hub.shard_for_ufrag("second"), None);
        // A late update for a removed session adds nothing.
        hub.set_ufrag(SessionId(1), "late".into());
        assert_eq!(hub.shard_for_ufrag("late"), None);
    }

    #[test]
    fn one_publisher_per_stream_and_viewers_need_one() {
        let hub = Hub::new(2);
        let none = (Vec::new(), Vec::new());
        let ten = crate::config::LimitsConfig {
            max_sessions: 10,
            ..Default::default()
        };
        let one = crate::config::LimitsConfig {
            max_sessions: 1,
            ..Default::default()
        };
        assert_eq!(
            hub.register(SessionId(1), "s", Role::Play, &ten, none.clone())
                .err(),
            Some(ClaimError::NoPublisher)
        );
        let shard = hub
            .register(SessionId(2), "s", Role::Publish, &ten, none.clone())
            .expect("publisher")
            .shard;
        assert_eq!(
            hub.register(SessionId(3), "s", Role::Publish, &ten, none.clone())
                .err(),
            Some(ClaimError::PublisherExists)
        );
        let placed = hub
            .register(SessionId(4), "s", Role::Play, &ten, none.clone())
            .expect("viewer");
        let vshard = placed.shard;
        assert_ne!(shard, vshard, "least-loaded shard is chosen");
        assert_eq!(placed.publisher.map(|p| p.session), Some(SessionId(2)));
        assert_eq!(
            hub.set_viewer_shard(&Arc::from("s"), vshard, true),
            Some(shard)
        );
        // The list and the single stream show the publisher's codecs once it has them.
        // An offer lists a codec once per payload type; the stream shows it once.
        let video = vec!["VP8".into(), "H264".into(), "VP8".into(), "H264".into()];
        hub.set_publisher_codecs("s", SessionId(2), video, vec!["OPUS".into()], true);
        let (key, listed) = hub.stream("s").expect("listed");
        assert_eq!(&*key, "s");
        assert_eq!(hub.streams(), vec![listed.clone()]);
        assert_eq!((listed.live, listed.viewers), (true, 1));
        assert_eq!(
            (listed.video_codecs, listed.audio_codecs),
            (vec!["VP8".into(), "H264".into()], vec!["OPUS".into()])
        );
        assert_eq!(
            hub.unregister(SessionId(2)),
            Some((Arc::from("s"), 1 << vshard))
        );
        assert_eq!(hub.publisher_shard("s"), None);
        let (_, gone) = hub.stream("s").expect("the viewer keeps it");
        assert!(!gone.live && gone.video_codecs.is_empty());
        assert_eq!(
            hub.register(SessionId(5), "x", Role::Publish, &one, none)
                .err(),
            Some(ClaimError::Full)
        );
    }
}
