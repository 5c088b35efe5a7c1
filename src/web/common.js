// Shared by the pages: the bearer token, fragment parameters, and a WHIP/WHEP session that
// reconnects by itself.

const TOKEN_KEY = 'wishcast.token';

/** Parameters from the query and the fragment (`#codec=vp8&autostart=1`); the fragment wins. */
export function params() {
  const p = new URLSearchParams(location.search);
  for (const [k, v] of new URLSearchParams(location.hash.replace(/^#/, ''))) p.set(k, v);
  return p;
}

/**
 * The bearer token: from `#token=` (then kept in this tab's session storage and taken out of the
 * address bar, so it is not bookmarked or shown), else from session storage.
 */
export function loadToken() {
  const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
  const t = frag.get('token');
  if (t !== null) {
    saveToken(t);
    frag.delete('token');
    const rest = frag.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return t.trim();
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function saveToken(t) {
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t.trim());
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage can be disabled; the token then lives as long as the page.
  }
}

/** Wires the header's token field; `onChange(token)` runs when the user submits a new one. */
export function bindTokenForm(initial, onChange) {
  const form = document.getElementById('token-form');
  const input = document.getElementById('token');
  input.value = initial;
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const t = input.value.trim();
    saveToken(t);
    onChange(t);
  });
}

export function authHeaders(token, extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

/** Seconds to wait from a `Retry-After` header (delay-seconds or an HTTP date), or null. */
export function retryAfter(res) {
  const v = res.headers.get('Retry-After');
  if (!v) return null;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const when = Date.parse(v);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/** The `detail` of a problem+json answer, else the status line. */
export async function problemDetail(res) {
  try {
    const body = await res.text();
    const j = JSON.parse(body);
    if (j && typeof j.detail === 'string') return j.detail;
  } catch {
    // Not JSON: fall through to the status.
  }
  return `HTTP ${res.status} ${res.statusText}`.trim();
}

/** Every `Link` of a response as `{ uri, attrs }` (attribute names lower-cased). */
export function linksFrom(res) {
  const header = res.headers.get('Link');
  if (!header) return [];
  const links = [];
  // Split on commas that start a new `<uri>`, not on commas inside quoted values.
  for (const link of header.split(/,\s*(?=<)/)) {
    const m = link.match(/^\s*<([^>]*)>(.*)$/);
    if (!m) continue;
    const attrs = {};
    for (const a of m[2].matchAll(/;\s*([\w-]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))/g)) {
      attrs[a[1].toLowerCase()] = a[2] ?? a[3];
    }
    links.push({ uri: m[1], attrs });
  }
  return links;
}

/** `Link: <turn:…>; rel="ice-server"; username="…"; credential="…"` (RFC 9725 §4.6). */
export function iceServersFrom(res) {
  const servers = [];
  for (const { uri, attrs } of linksFrom(res)) {
    if (attrs.rel !== 'ice-server') continue;
    const s = { urls: uri };
    if (attrs.username !== undefined) s.username = attrs.username;
    if (attrs.credential !== undefined) s.credential = attrs.credential;
    servers.push(s);
  }
  return servers;
}

/** Resolves once ICE gathering is complete, or after `ms`: the offer then has its candidates. */
export function iceGathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/** Exponential backoff with jitter: 0.5 s doubling to 10 s, each delay ±20 %. */
export class Backoff {
  constructor(first = 500, max = 10000) {
    this.first = first;
    this.max = max;
    this.reset();
  }
  reset() {
    this.current = this.first;
  }
  next() {
    const d = this.current * (0.8 + 0.4 * Math.random());
    this.current = Math.min(this.max, this.current * 2);
    return d;
  }
}

/**
 * A WHIP or WHEP session kept up until `stop()`: POST the offer (after ICE gathering; no
 * trickle), watch the connection and the media, and on failure or stall DELETE the old session
 * and POST again after a backoff, honouring `Retry-After`.
 *
 * `role` is 'whip' or 'whep'. `prepare(pc)` adds the tracks or transceivers. `media(pc)` returns
 * `{ progress, live }`: whether media moved since the last call, and whether it counts as live.
 * `onState(state, message)` sees every change; the states are idle, connecting, waiting (WHEP: no
 * publisher yet), live, reconnecting, unauthorized, error and stopped. With `relayOnly` the
 * connection offers relayed candidates only (`iceTransportPolicy: 'relay'`), as a client whose
 * only way out is a TURN server; the page's `#relay=1` asks for it.
 */
export class Session {
  constructor({ endpoint, role, getToken, prepare, media, onState, onCreated, relayOnly = false }) {
    this.endpoint = new URL(endpoint, location.href).href;
    this.role = role;
    this.relayOnly = relayOnly;
    this.getToken = getToken;
    this.prepare = prepare;
    this.media = media;
    this.onState = onState || (() => {});
    // Called with the 201 and the session URL once a session exists.
    this.onCreated = onCreated || (() => {});
    this.state = 'idle';
    this.message = '';
    this.pc = null;
    this.sessionUrl = null;
    this.deleteStatus = null;
    this.postAt = null;
    this.iceServers = [];
    this.generation = 0;
    this.wake = null;
    this.ended = false;
  }

  setState(state, message = '') {
    this.state = state;
    this.message = message;
    this.onState(state, message);
  }

  /** Starts (or restarts) the session loop. */
  start() {
    const gen = ++this.generation;
    this.deleteStatus = null;
    this.run(gen);
  }

  /** Ends the session: DELETE the resource and resolve with the DELETE's status (null if none). */
  async stop() {
    this.generation++;
    if (this.wake) this.wake();
    const { pc, sessionUrl } = this;
    this.pc = null;
    this.sessionUrl = null;
    let status = null;
    if (sessionUrl) status = await this.remove(sessionUrl);
    if (pc) pc.close();
    this.deleteStatus = status;
    this.setState('stopped');
    return status;
  }

  /** DELETE a session resource; the status, or 0 if the request failed. */
  async remove(url, keepalive = false) {
    try {
      const res = await fetch(url, {
        method: 'DELETE',
        headers: authHeaders(this.getToken()),
        keepalive,
        signal: AbortSignal.timeout(3000),
      });
      return res.status;
    } catch {
      return 0;
    }
  }

  /** Sleeps `ms`, cut short by `stop()`. */
  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
  }

  async run(gen) {
    const backoff = new Backoff();
    this.everLive = false;
    this.setState('connecting');
    while (gen === this.generation) {
      let outcome;
      try {
        outcome = await this.attempt(gen);
      } catch (e) {
        outcome = { message: String(e && e.message ? e.message : e) };
      }
      if (gen !== this.generation) return;
      if (outcome.fatal) {
        this.setState(outcome.state || 'error', outcome.message);
        return;
      }
      if (outcome.wasLive) {
        this.everLive = true;
        backoff.reset();
      }
      this.setState(outcome.state || 'reconnecting', outcome.message || '');
      // Retry-After is a floor: add up to 10 % so many viewers do not return in step.
      const delay = outcome.retryAfter != null
        ? outcome.retryAfter * 1000 * (1 + 0.1 * Math.random())
        : backoff.next();
      await this.pause(delay);
    }
  }

  /** One POST and the life of the connection it makes; resolves with why it ended. */
  async attempt(gen) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      bundlePolicy: 'max-bundle',
      iceTransportPolicy: this.relayOnly ? 'relay' : 'all',
    });
    this.pc = pc;
    this.ended = false;
    const stale = () => gen !== this.generation;
    try {
      await this.prepare(pc);
      await pc.setLocalDescription();
      await iceGathered(pc, 2000);
      if (stale()) return {};
      this.postAt = performance.now();
      let res;
      try {
        res = await fetch(this.endpoint, {
          method: 'POST',
          headers: authHeaders(this.getToken(), { 'Content-Type': 'application/sdp' }),
          body: pc.localDescription.sdp,
        });
      } catch (e) {
        return { message: `cannot reach the gateway (${e.message})` };
      }
      if (res.status !== 201) return await this.refused(res);
      const location = res.headers.get('Location');
      const answer = await res.text();
      if (!location) return { fatal: true, message: 'the gateway answered 201 without a Location' };
      const sessionUrl = new URL(location, this.endpoint).href;
      if (stale()) {
        await this.remove(sessionUrl);
        return {};
      }
      this.sessionUrl = sessionUrl;
      // ICE servers apply to the next attempt: this offer's candidates are already sent.
      const servers = iceServersFrom(res);
      const hadServers = this.iceServers.length > 0;
      if (servers.length) this.iceServers = servers;
      if (this.relayOnly && !hadServers && servers.length) {
        // Relayed candidates need the TURN servers this answer just named: offer again at
        // once with them, rather than wait for a connection that cannot come.
        this.sessionUrl = null;
        await this.remove(sessionUrl);
        return { retryAfter: 0, message: 'offering again with the TURN servers' };
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      this.setState(this.everLive ? 'reconnecting' : 'connecting');
      this.onCreated(res, sessionUrl);
      const ended = await this.watch(pc, stale);
      if (!stale()) {
        // Free the old session first: a publisher's next POST would otherwise get 409.
        this.sessionUrl = null;
        await this.remove(sessionUrl);
      }
      return ended;
    } finally {
      pc.close();
      if (this.pc === pc) this.pc = null;
    }
  }

  /** What a POST that did not create a session means for the next attempt. */
  async refused(res) {
    const message = await problemDetail(res);
    const after = retryAfter(res);
    switch (res.status) {
      case 409:
        if (this.role === 'whep') return { state: 'waiting', retryAfter: after ?? 2, message };
        return { retryAfter: after, message };
      case 429:
      case 503:
        return { retryAfter: after, message };
      case 401:
      case 403:
        return { fatal: true, state: 'unauthorized', message };
      default:
        if (res.status >= 500) return { message };
        return { fatal: true, message };
    }
  }

  /** Watches a connected session until it fails, stalls or is stopped. */
  async watch(pc, stale) {
    const started = performance.now();
    let lastProgress = started;
    let wasLive = false;
    let downSince = null;
    while (!stale()) {
      const now = performance.now();
      const cs = pc.connectionState;
      if (cs === 'failed' || cs === 'closed') return { wasLive, message: `connection ${cs}` };
      if (this.ended) {
        const why = this.ended;
        this.ended = false;
        if (why.reconnect) return { wasLive, retryAfter: Math.random(), message: why.reconnect };
        return { wasLive, message: 'a track ended' };
      }
      if (cs === 'disconnected') {
        downSince ??= now;
        // Disconnected often heals by itself within a few seconds; failed does not.
        if (now - downSince > 4000) return { wasLive, message: 'connection lost' };
      } else {
        downSince = null;
      }
      if (cs === 'connected') {
        const m = await this.media(pc);
        if (stale()) break;
        if (m.progress) lastProgress = performance.now();
        if (m.live && this.state !== 'live') {
          wasLive = true;
          this.setState('live');
        }
        const quiet = performance.now() - lastProgress;
        if (quiet > (wasLive ? 5000 : 10000)) {
          return { wasLive, message: `no media for ${Math.round(quiet / 1000)} s` };
        }
      } else if (!wasLive && now - started > 15000) {
        return { message: 'could not connect (ICE/DTLS)' };
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    return { wasLive };
  }

  /** For `ontrack` handlers: a remote track ended, reconnect. */
  trackEnded() {
    this.ended = true;
  }

  /** The gateway asked for a new session (optionally at another endpoint): end this one and
   * start the next within a second, spread so many players do not return at once. */
  reconnect(message, url) {
    if (url) this.endpoint = new URL(url, this.endpoint).href;
    this.ended = { reconnect: message };
  }
}

/** Rates from two cumulative counters read at two times. */
export class Rate {
  constructor() {
    this.last = new Map();
  }
  /** Per-second rate of `value` under `key` since the previous call (null the first time). */
  per(key, value, timestamp) {
    const prev = this.last.get(key);
    this.last.set(key, { value, timestamp });
    if (!prev || timestamp <= prev.timestamp || value < prev.value) return null;
    return ((value - prev.value) * 1000) / (timestamp - prev.timestamp);
  }
}

/** The video and audio RTP stream stats of `type` ('inbound-rtp' or 'outbound-rtp'). */
export function rtpStats(report, type) {
  let video = null;
  let audio = null;
  for (const s of report.values()) {
    if (s.type !== type) continue;
    if (s.kind === 'video') video = s;
    else if (s.kind === 'audio') audio = s;
  }
  return { video, audio };
}

/** The stats of the candidate pair in use (for RTT). */
export function selectedPair(report) {
  for (const s of report.values()) {
    if (s.type === 'transport' && s.selectedCandidatePairId) return report.get(s.selectedCandidatePairId);
  }
  for (const s of report.values()) {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') return s;
  }
  return null;
}

/**
 * The path the media takes, from the local candidate of the pair in use: "udp", "tcp" (ICE-TCP,
 * for a network that blocks UDP) or "relay/udp" (through a TURN server, over the transport
 * named), or null before a pair is chosen.
 */
export function mediaPath(report) {
  const pair = selectedPair(report);
  const local = pair && report.get(pair.localCandidateId);
  if (!local) return null;
  if (local.candidateType === 'relay') return `relay/${local.relayProtocol || '?'}`;
  return local.protocol || null;
}

export function formatBitrate(bps) {
  if (bps == null) return '–';
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(2)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

/** Copies text to the clipboard; falls back to a selected field where the API is missing. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement('textarea');
    area.value = text;
    area.style.position = 'fixed';
    area.style.opacity = '0';
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** A element with text content and attributes: the pages never build HTML from strings. */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
