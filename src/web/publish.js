// The WHIP publisher: camera or screen, a chosen codec and bitrate, to /whip/{stream}, as one
// video layer or as three (simulcast).
// Automation may start it from the fragment
// (`#codec=vp8&height=360&keep=1&simulcast=1&autostart=1&token=…`), reads `window.wishcast`
// (state, pc, sessionUrl, deleteStatus, layers) and may call stop().

import {
  bindTokenForm, formatBitrate, mediaPath, loadToken, params, Rate, rtpStats, selectedPair, Session,
} from './common.js';

const preview = document.getElementById('preview');
const badge = document.getElementById('state');
const message = document.getElementById('message');
const statsBox = document.getElementById('stats');
const form = document.getElementById('settings');
const sourceSel = document.getElementById('source');
const codecSel = document.getElementById('codec');
const bitrateIn = document.getElementById('bitrate');
const audioBox = document.getElementById('audio');
const heightSel = document.getElementById('height');
const keepBox = document.getElementById('keep');
const simulcastBox = document.getElementById('simulcast');
const startBtn = document.getElementById('start');
const stopBtn = document.getElementById('stop');
const endpoint = new URL(document.body.dataset.endpoint, location.href).href;
document.getElementById('endpoint').textContent = endpoint;
const watchLink = document.getElementById('watch-link');
watchLink.textContent = new URL(watchLink.getAttribute('href'), location.href).href;

const opts = params();
let token = loadToken();
let local = null;
const rate = new Rate();
let lastRender = 0;
let seen = { pc: null, bytes: 0 };

/** Video codecs the gateway forwards, by what this browser can send. */
const WANTED = ['H264', 'VP8', 'VP9', 'AV1'];

function senderCodecs(kind) {
  return (window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities(kind)?.codecs) || [];
}

function fillCodecs() {
  const have = new Set(senderCodecs('video').map((c) => c.mimeType.toUpperCase()));
  for (const name of WANTED) {
    if (!have.has(`VIDEO/${name}`)) continue;
    const o = document.createElement('option');
    o.value = name.toLowerCase();
    o.textContent = name;
    codecSel.append(o);
  }
  const asked = (opts.get('codec') || '').toLowerCase();
  if (asked) codecSel.value = asked;
}

/**
 * Makes `tr` offer only `codec` (all its profiles), plus RTX for retransmissions. Sender
 * capabilities are tried first; browsers that check against receiver capabilities get those.
 */
function preferCodec(tr, kind, codec) {
  const pick = (caps) => {
    const main = caps.filter((c) => c.mimeType.toLowerCase() === `${kind}/${codec}`);
    const rtx = caps.filter((c) => c.mimeType.toLowerCase() === `${kind}/rtx`);
    return main.length ? [...main, ...rtx] : [];
  };
  const fromSender = pick(senderCodecs(kind));
  if (!fromSender.length) throw new Error(`this browser cannot send ${codec.toUpperCase()}`);
  if (!tr.setCodecPreferences) return;
  try {
    tr.setCodecPreferences(fromSender);
  } catch {
    const recv = (RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities(kind)?.codecs) || [];
    tr.setCodecPreferences(pick(recv));
  }
}

/** Codecs this page sends simulcast in: Chromium's encoders do it for these two. */
const SIMULCAST_CODECS = ['vp8', 'h264'];

/**
 * Three layers: full, half and quarter size. The top one gets the bitrate setting; the lower
 * ones at most what libwebrtc itself allows a 360p and a 180p layer, their size from a 720p
 * camera.
 */
function simulcastEncodings(top) {
  return [
    top ? { rid: 'h', maxBitrate: top } : { rid: 'h' },
    { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 700_000 },
    { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 200_000 },
  ];
}

function syncSimulcast(running) {
  const can = SIMULCAST_CODECS.includes(codecSel.value);
  simulcastBox.disabled = running || !can;
  simulcastBox.parentElement.title = can
    ? 'Send three layers (full, half and quarter size) so each viewer gets the one its connection carries'
    : `This page sends simulcast in ${SIMULCAST_CODECS.map((c) => c.toUpperCase()).join(' or ')} only`;
}

function maxBitrate() {
  const kbps = Number(bitrateIn.value);
  return Number.isFinite(kbps) && kbps > 0 ? Math.round(kbps * 1000) : undefined;
}

const session = new Session({
  endpoint,
  relayOnly: opts.get('relay') === '1',
  role: 'whip',
  getToken: () => token,
  prepare(pc) {
    if (!local) throw new Error('no media to send');
    const codec = codecSel.value;
    for (const track of local.getTracks()) {
      if (track.kind === 'video') {
        const bps = maxBitrate();
        const tr = pc.addTransceiver(track, {
          direction: 'sendonly',
          streams: [local],
          sendEncodings: simulcastBox.checked ? simulcastEncodings(bps) : [bps ? { maxBitrate: bps } : {}],
        });
        preferCodec(tr, 'video', codec);
      } else {
        const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [local] });
        preferCodec(tr, 'audio', 'opus');
      }
    }
  },
  media: readStats,
  onState(state, why) {
    badge.textContent = state;
    badge.className = `badge ${state}`;
    message.textContent = why;
    const running = !['idle', 'stopped', 'error', 'unauthorized'].includes(state);
    startBtn.disabled = running;
    stopBtn.disabled = !running;
    for (const e of [sourceSel, codecSel, audioBox, heightSel, keepBox]) e.disabled = running;
    syncSimulcast(running);
    if (state !== 'live') statsBox.textContent = '';
  },
});

/** The media path of the pair in use, from the last statistics read (see `mediaPath`). */
let path = null;
/** The video layers being sent, largest first: { rid, width, height, framesEncoded }. */
let sent = [];

async function readStats(pc) {
  const report = await pc.getStats();
  if (seen.pc !== pc) seen = { pc, bytes: 0 };
  path = mediaPath(report);
  const { audio: a } = rtpStats(report, 'outbound-rtp');
  // Simulcast sends one outbound video stream per layer: count them all, show the largest.
  const videos = [...report.values()].filter((s) => s.type === 'outbound-rtp' && s.kind === 'video');
  videos.sort((x, y) => (y.frameHeight ?? 0) - (x.frameHeight ?? 0));
  const v = videos[0] ?? null;
  sent = videos.map((s) => ({
    rid: s.rid ?? null,
    width: s.frameWidth ?? null,
    height: s.frameHeight ?? null,
    framesEncoded: s.framesEncoded ?? 0,
  }));
  const bytes = videos.reduce((n, s) => n + (s.bytesSent ?? 0), 0) + (a?.bytesSent ?? 0);
  const progress = bytes > seen.bytes;
  seen.bytes = bytes;
  const live = v ? videos.some((s) => (s.framesEncoded ?? 0) > 0) : (a?.packetsSent ?? 0) > 0;
  const now = performance.now();
  if (now - lastRender > 900) {
    lastRender = now;
    statsBox.textContent = overlay(report, v, a, bytes);
  }
  return { progress, live };
}

function overlay(report, v, a, bytes) {
  const lines = [];
  const t = (v || a)?.timestamp ?? performance.now();
  if (v) {
    const codec = report.get(v.codecId);
    const fps = v.framesPerSecond ?? rate.per('frames', v.framesEncoded ?? 0, t);
    lines.push(`video  ${v.frameWidth ?? '?'}×${v.frameHeight ?? '?'} @ ${fps == null ? '–' : fps.toFixed(0)} fps`);
    lines.push(`codec  ${codec ? codec.mimeType.replace('video/', '') : '–'}${v.encoderImplementation ? ` (${v.encoderImplementation})` : ''}`);
    if (sent.length > 1) {
      const sizes = sent.map((l) => `${l.rid ?? '?'} ${l.height ? `${l.height}p` : 'off'}`);
      lines.push(`layers ${sizes.join(', ')}`);
    }
    if (v.qualityLimitationReason && v.qualityLimitationReason !== 'none') {
      lines.push(`limit  ${v.qualityLimitationReason}`);
    }
    const remote = v.remoteId ? report.get(v.remoteId) : null;
    if (remote) {
      lines.push(`loss   ${((remote.fractionLost ?? 0) * 100).toFixed(2)} % (${remote.packetsLost ?? 0} packets)`);
    }
  }
  if (a) {
    const codec = report.get(a.codecId);
    lines.push(`audio  ${codec ? codec.mimeType.replace('audio/', '') : '–'}, ${a.packetsSent ?? 0} packets`);
  }
  const bps = rate.per('bytes', bytes, t);
  lines.push(`rate   ${formatBitrate(bps == null ? null : bps * 8)}`);
  const rtt = selectedPair(report)?.currentRoundTripTime;
  lines.push(`rtt    ${rtt == null ? '–' : `${(rtt * 1000).toFixed(0)} ms`}`);
  lines.push(`path   ${path ?? '–'}`);
  return lines.join('\n');
}

async function openMedia() {
  const audio = audioBox.checked;
  if (sourceSel.value === 'screen') {
    return navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 30 }, audio });
  }
  const height = Number(heightSel.value);
  return navigator.mediaDevices.getUserMedia({
    video: {
      width: { ideal: Math.round((height * 16) / 9) },
      height: { ideal: height },
      frameRate: { ideal: 30 },
    },
    audio,
  });
}

async function start() {
  if (!codecSel.value) {
    session.setState('error', 'this browser offers none of H264, VP8, VP9 and AV1 for sending');
    return;
  }
  if (simulcastBox.checked && !SIMULCAST_CODECS.includes(codecSel.value)) {
    session.setState('error', `simulcast is sent in VP8 or H264 only, not ${codecSel.value.toUpperCase()}`);
    return;
  }
  if (!senderCodecs('video').some((c) => c.mimeType.toLowerCase() === `video/${codecSel.value}`)) {
    session.setState('error', `this browser cannot send ${codecSel.value.toUpperCase()}`);
    return;
  }
  if (!navigator.mediaDevices) {
    // Browsers hide capture outside secure contexts.
    session.setState('error', 'camera and screen capture need HTTPS, or localhost');
    return;
  }
  session.setState('starting', 'opening the media source');
  try {
    local = await openMedia();
  } catch (e) {
    session.setState('error', `no media source: ${e.message}`);
    return;
  }
  preview.srcObject = local;
  for (const track of local.getVideoTracks()) {
    // 'detail' makes the encoder drop frames rather than scale down when bandwidth is short
    // (screen content gets it always: text must stay legible).
    if (keepBox.checked || sourceSel.value === 'screen') track.contentHint = 'detail';
  }
  for (const track of local.getTracks()) {
    // The user ended a screen share or unplugged the camera: the broadcast is over.
    track.addEventListener('ended', () => stop());
  }
  session.start();
}

async function stop() {
  const status = await session.stop();
  if (local) {
    for (const t of local.getTracks()) t.stop();
    local = null;
  }
  preview.srcObject = null;
  return status;
}

/** Applies a new bitrate to the running sender, without renegotiation; with simulcast, to the
 * full-size layer, the first encoding. */
async function applyBitrate() {
  const pc = session.pc;
  const sender = pc?.getSenders().find((s) => s.track?.kind === 'video');
  if (!sender) return;
  const p = sender.getParameters();
  if (!p.encodings?.length) return;
  const bps = maxBitrate();
  if (bps) p.encodings[0].maxBitrate = bps;
  else delete p.encodings[0].maxBitrate;
  try {
    await sender.setParameters(p);
  } catch (e) {
    message.textContent = `bitrate not applied: ${e.message}`;
  }
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  start();
});
stopBtn.addEventListener('click', () => stop());
bitrateIn.addEventListener('change', () => applyBitrate());
codecSel.addEventListener('change', () => syncSimulcast(false));

bindTokenForm(token, (t) => {
  token = t;
});

addEventListener('pagehide', () => {
  if (session.sessionUrl) session.remove(session.sessionUrl, true);
});

fillCodecs();
if (opts.get('source')) sourceSel.value = opts.get('source');
if (opts.get('bitrate')) bitrateIn.value = opts.get('bitrate');
if (opts.get('audio') === '0') audioBox.checked = false;
if (opts.get('height')) heightSel.value = opts.get('height');
if (opts.get('keep') === '1') keepBox.checked = true;
if (opts.get('simulcast') === '1') simulcastBox.checked = true;
syncSimulcast(false);

window.wishcast = {
  get state() { return session.state; },
  get message() { return session.message; },
  get pc() { return session.pc; },
  get sessionUrl() { return session.sessionUrl; },
  get deleteStatus() { return session.deleteStatus; },
  /** How the media travels: "udp", "tcp" (ICE-TCP) or "relay/…" (TURN); null before. */
  get path() { return path; },
  get codec() { return codecSel.value; },
  /** Whether video goes out as three simulcast layers. */
  get simulcast() { return simulcastBox.checked; },
  /** The video layers sent, from the last statistics read, largest first:
   * { rid, width, height, framesEncoded } (rid null without simulcast). */
  get layers() { return sent.map((l) => ({ ...l })); },
  preview,
  start,
  stop,
};

if (opts.get('autostart') === '1') start();
