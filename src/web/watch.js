// The WHEP player: plays /whep/{stream}, reconnects by itself, and shows live statistics.
// When the gateway offers server-sent events it follows them: the viewer count, the publisher
// leaving and returning, and requests to reconnect. When the gateway also offers layer
// selection and the stream is simulcast, a menu picks the layer to receive.
// Automation reads `window.wishcast` (state, pc, sessionUrl, deleteStatus, layers, layer,
// playing) and may call stop() and selectLayer(rid or null).

import {
  authHeaders, bindTokenForm, el, formatBitrate, linksFrom, mediaPath, loadToken, params, problemDetail,
  Rate, rtpStats, selectedPair, Session,
} from './common.js';

const video = document.getElementById('video');
const badge = document.getElementById('state');
const message = document.getElementById('message');
const statsBox = document.getElementById('stats');
const unmute = document.getElementById('unmute');
const toggle = document.getElementById('toggle');
const statsToggle = document.getElementById('stats-toggle');
const watching = document.getElementById('watching');
const layerBox = document.getElementById('layer-box');
const layerSel = document.getElementById('layer');
const playing = document.getElementById('playing');
const endpoint = new URL(document.body.dataset.endpoint, location.href).href;
document.getElementById('endpoint').textContent = endpoint;

const opts = params();
let token = loadToken();
let showStats = opts.get('stats') !== '0';

// Counters of the current peer connection, for progress and rates.
let seen = { pc: null, bytes: 0 };
const rate = new Rate();
let lastRender = 0;

const STATE_TEXT = {
  idle: 'idle',
  connecting: 'connecting',
  waiting: 'waiting for the publisher',
  live: 'live',
  reconnecting: 'reconnecting',
  unauthorized: 'token needed',
  error: 'error',
  stopped: 'stopped',
};

const session = new Session({
  endpoint,
  relayOnly: opts.get('relay') === '1',
  role: 'whep',
  getToken: () => token,
  prepare(pc) {
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const media = new MediaStream();
    pc.addEventListener('track', (e) => {
      media.addTrack(e.track);
      e.track.addEventListener('ended', () => {
        if (session.pc === pc) session.trackEnded();
      });
      if (video.srcObject !== media) video.srcObject = media;
      video.play().catch(() => {
        // Autoplay refused: the muted attribute normally prevents this; the user can click.
      });
    });
  },
  media: readStats,
  onCreated: follow,
  onState(state, why) {
    badge.textContent = STATE_TEXT[state] || state;
    badge.className = `badge ${state}`;
    message.textContent = why;
    toggle.textContent = state === 'stopped' || state === 'error' || state === 'unauthorized' ? 'Play' : 'Stop';
    if (state !== 'live') statsBox.textContent = '';
  },
});

/** The media path of the pair in use, from the last statistics read (see `mediaPath`). */
let path = null;

// ---- server-sent events (WHEP core extensions) ----

const EVENTS_REL = 'urn:ietf:params:whep:ext:core:server-sent-events';
const WANTED = ['active', 'inactive', 'viewercount', 'reconnect', 'layers'];
/** The publisher left (an `inactive` event) and has not come back yet. */
let publisherGone = false;
let events = null;

/** After a 201: if it links an event stream entry point, create an event stream and read it.
 * EventSource cannot send the bearer token, so this is a streaming fetch. */
async function follow(res, sessionUrl) {
  // Every new session, a reconnect's too, starts on the gateway's automatic choice: the menu
  // returns to auto and waits for this session's `layers` event.
  const layerLink = linksFrom(res).find((l) => l.attrs.rel === LAYER_REL);
  layerUrl = layerLink ? new URL(layerLink.uri, sessionUrl).href : null;
  layers = [];
  layerMedia = null;
  chosen = null;
  renderLayers();
  const link = linksFrom(res).find((l) => l.attrs.rel === EVENTS_REL);
  events?.abort();
  watching.hidden = true;
  publisherGone = false;
  if (!link) return;
  const ctrl = new AbortController();
  events = ctrl;
  try {
    const entry = new URL(link.uri, sessionUrl).href;
    const created = await fetch(entry, {
      method: 'POST',
      headers: authHeaders(token, { 'Content-Type': 'application/json' }),
      body: JSON.stringify(WANTED),
      signal: ctrl.signal,
    });
    const location = created.headers.get('Location');
    if (created.status !== 201 || !location) return;
    const pull = await fetch(new URL(location, entry).href, {
      headers: authHeaders(token, { Accept: 'text/event-stream' }),
      signal: ctrl.signal,
    });
    if (!pull.ok || !pull.body) return;
    const reader = pull.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data += line.slice(5).trim();
        }
        if (data) onEvent(name, data);
      }
    }
  } catch {
    // Aborted, or the connection went: the media connection decides what happens next.
  } finally {
    if (events === ctrl) events = null;
  }
}

function onEvent(name, text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return;
  }
  if (name === 'viewercount' && Number.isFinite(data.viewercount)) {
    watching.textContent = `${data.viewercount} watching`;
    watching.hidden = false;
  } else if (name === 'inactive') {
    publisherGone = true;
    session.setState('waiting', 'the publisher left; waiting for it to return');
  } else if (name === 'active') {
    publisherGone = false;
  } else if (name === 'reconnect') {
    session.reconnect('the gateway asked to reconnect', typeof data.url === 'string' ? data.url : null);
  } else if (name === 'layers' && data && typeof data === 'object') {
    setLayers(data);
  }
}

// ---- video layer selection (WHEP core extension) ----

const LAYER_REL = 'urn:ietf:params:whep:ext:core:layer';
/** The current session's layer resource, when the gateway offers one. */
let layerUrl = null;
/** The video m-line the layers are listed under (the `layers` event's key), sent as mediaId. */
let layerMedia = null;
/** The layers of the last `layers` event that can be picked (they have a rid), largest first. */
let layers = [];
/** The rid this player pinned, or null while the gateway chooses. */
let chosen = null;
/** The size of the last decoded video frame: the layer on screen. */
let onScreen = null;

function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** Largest first: by size when every layer's is known, else by bitrate. */
function largestFirst(list) {
  const bySize = list.every((l) => l.width && l.height);
  return list.sort((a, b) => (bySize ? b.height - a.height || b.width - a.width : 0)
    || (b.bitrate ?? 0) - (a.bitrate ?? 0));
}

function setLayers(data) {
  // Keyed by m-line index; this player has one video m-line, so the lowest key is it.
  const key = Object.keys(data).filter((k) => Array.isArray(data[k])).sort((a, b) => Number(a) - Number(b))[0];
  layerMedia = key ?? null;
  layers = largestFirst((key === undefined ? [] : data[key])
    .filter((l) => l && typeof l.rid === 'string')
    // The draft's example spells it "heigth"; take either.
    .map((l) => ({ rid: l.rid, bitrate: num(l.bitrate), width: num(l.width), height: num(l.height ?? l.heigth) })));
  if (chosen !== null && !layers.some((l) => l.rid === chosen)) {
    // The pinned layer is gone and the gateway chooses meanwhile: hand the choice back for good,
    // so the menu says what happens.
    selectLayer(null);
  }
  renderLayers();
}

function shortRate(bps) {
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

function layerLabel(l) {
  const size = l.height ? `${l.height}p` : `layer ${l.rid}`;
  // The draft: a layer without a bitrate, or with 0, is inactive.
  return `${size} · ${l.bitrate > 0 ? shortRate(l.bitrate) : 'inactive'}`;
}

/** The menu, rebuilt from `layers` and `chosen`: shown once there are two layers to choose from. */
function renderLayers() {
  const show = Boolean(layerUrl) && layers.length >= 2;
  layerBox.hidden = !show;
  playing.hidden = !show || !onScreen;
  if (!show) return;
  const options = [el('option', { value: '' }, 'auto')];
  for (const l of layers) {
    const o = el('option', { value: l.rid }, layerLabel(l));
    o.disabled = !(l.bitrate > 0) && l.rid !== chosen;
    options.push(o);
  }
  layerSel.replaceChildren(...options);
  layerSel.value = chosen ?? '';
}

/**
 * Asks the gateway for the layer `rid`, or with null for its automatic choice. Resolves with the
 * HTTP status (0 if the request failed); the menu shows the choice once the gateway took it.
 */
async function selectLayer(rid) {
  if (!layerUrl) return 0;
  const url = layerUrl;
  const body = layerMedia === null ? {} : { mediaId: layerMedia };
  if (rid !== null && rid !== undefined) body.rid = String(rid);
  let status = 0;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: authHeaders(token, { 'Content-Type': 'application/json' }),
      body: JSON.stringify(body),
    });
    status = res.status;
    // A reconnect meanwhile made a new session, which starts on auto: this answer is stale.
    if (url !== layerUrl) return status;
    if (res.ok) chosen = body.rid ?? null;
    else message.textContent = `layer not changed: ${await problemDetail(res)}`;
  } catch (e) {
    message.textContent = `layer not changed: ${e.message}`;
  }
  renderLayers();
  return status;
}

layerSel.addEventListener('change', () => {
  selectLayer(layerSel.value || null);
});

/** Reads the receiver's statistics: progress for the session, numbers for the overlay. */
async function readStats(pc) {
  const report = await pc.getStats();
  if (seen.pc !== pc) seen = { pc, bytes: 0 };
  path = mediaPath(report);
  const { video: v, audio: a } = rtpStats(report, 'inbound-rtp');
  if (v?.frameWidth && v?.frameHeight) {
    onScreen = { width: v.frameWidth, height: v.frameHeight };
    playing.textContent = `now ${v.frameWidth}×${v.frameHeight}`;
    playing.hidden = layerBox.hidden;
  }
  const bytes = (v?.bytesReceived ?? 0) + (a?.bytesReceived ?? 0);
  const progress = bytes > seen.bytes;
  seen.bytes = bytes;
  // While the publisher is away the silence is expected: the session waits for its return.
  if (publisherGone) return { progress: true, live: false };
  const live = v ? (v.framesDecoded ?? 0) > 0 : (a?.packetsReceived ?? 0) > 0;
  const now = performance.now();
  if (showStats && now - lastRender > 900) {
    lastRender = now;
    statsBox.textContent = overlay(report, v, a, bytes, captureDelay(pc));
  } else if (!showStats) {
    statsBox.textContent = '';
  }
  return { progress, live };
}

/** NTP's epoch (1900) before the Unix epoch, in milliseconds. */
const NTP_UNIX_MS = 2208988800000;

/**
 * Milliseconds from the publisher's capture of the frame on screen to now, from the
 * abs-capture-time header extension the gateway forwards (the browser exposes it as the
 * synchronization source's `captureTimestamp`, on the sender's NTP clock). It is the one-way
 * delay when the publisher's clock and this machine's agree (both on NTP); `null` when the
 * publisher sends no capture time.
 */
function captureDelay(pc) {
  const receiver = pc.getReceivers().find((r) => r.track?.kind === 'video');
  const source = receiver?.getSynchronizationSources?.()[0];
  if (source?.captureTimestamp == null) return null;
  const captured = source.captureTimestamp - NTP_UNIX_MS + (source.senderCaptureTimeOffset ?? 0);
  return Date.now() - captured;
}

function overlay(report, v, a, bytes, capture) {
  const lines = [];
  const t = (v || a)?.timestamp ?? performance.now();
  if (v) {
    const codec = report.get(v.codecId);
    const fps = v.framesPerSecond ?? rate.per('frames', v.framesDecoded ?? 0, t);
    lines.push(`video  ${v.frameWidth ?? '?'}×${v.frameHeight ?? '?'} @ ${fps == null ? '–' : fps.toFixed(0)} fps`);
    lines.push(`codec  ${codec ? codec.mimeType.replace('video/', '') : '–'}${v.decoderImplementation ? ` (${v.decoderImplementation})` : ''}`);
    const lost = v.packetsLost ?? 0;
    const got = v.packetsReceived ?? 0;
    lines.push(`loss   ${got + lost > 0 ? ((100 * lost) / (got + lost)).toFixed(2) : '0.00'} % (${lost} packets)`);
    // The jitter buffer's mean delay, which a playout-delay extension (media.playout_delay_max_ms)
    // bounds.
    const emitted = v.jitterBufferEmittedCount ?? 0;
    if (emitted > 0) lines.push(`buffer ${((1000 * (v.jitterBufferDelay ?? 0)) / emitted).toFixed(0)} ms`);
    if (capture != null) lines.push(`delay  ${capture.toFixed(0)} ms from capture`);
  }
  if (a) {
    const codec = report.get(a.codecId);
    lines.push(`audio  ${codec ? codec.mimeType.replace('audio/', '') : '–'}, ${a.packetsReceived ?? 0} packets`);
  }
  const bps = rate.per('bytes', bytes, t);
  lines.push(`rate   ${formatBitrate(bps == null ? null : bps * 8)}`);
  const pair = selectedPair(report);
  const rtt = pair?.currentRoundTripTime;
  lines.push(`rtt    ${rtt == null ? '–' : `${(rtt * 1000).toFixed(0)} ms`}`);
  lines.push(`path   ${path ?? '–'}`);
  return lines.join('\n');
}

function syncUnmute() {
  unmute.hidden = !video.muted;
}
unmute.addEventListener('click', () => {
  video.muted = false;
  video.play().catch(() => {
    video.muted = true;
  });
  syncUnmute();
});
video.addEventListener('volumechange', syncUnmute);
syncUnmute();

toggle.addEventListener('click', () => {
  if (session.state === 'stopped' || session.state === 'error' || session.state === 'unauthorized') session.start();
  else session.stop();
});
statsToggle.addEventListener('click', () => {
  showStats = !showStats;
  if (!showStats) statsBox.textContent = '';
});

bindTokenForm(token, (t) => {
  token = t;
  session.stop().then(() => session.start());
});

// Leaving the page ends the session at once instead of after the consent timeout.
addEventListener('pagehide', () => {
  if (session.sessionUrl) session.remove(session.sessionUrl, true);
});

window.wishcast = {
  get state() { return session.state; },
  get message() { return session.message; },
  get pc() { return session.pc; },
  get sessionUrl() { return session.sessionUrl; },
  get deleteStatus() { return session.deleteStatus; },
  /** How the media travels: "udp", "tcp" (ICE-TCP) or "relay/…" (TURN); null before. */
  get path() { return path; },
  /** `performance.now()` just before the POST that made the current session. */
  get postAt() { return session.postAt; },
  /** The last `layers` event's layers, largest first: { rid, bitrate, width, height }. */
  get layers() { return layers.map((l) => ({ ...l })); },
  /** The rid this player pinned, or null while the gateway chooses. */
  get layer() { return chosen; },
  /** Whether the session offers layer selection (its 201 linked the layer resource). */
  get canSelectLayer() { return layerUrl !== null; },
  /** { width, height } of the last decoded video frame, from the statistics; null before. */
  get playing() { return onScreen; },
  selectLayer,
  video,
  start: () => session.start(),
  stop: () => session.stop(),
};

if (opts.get('autostart') !== '0') session.start();
