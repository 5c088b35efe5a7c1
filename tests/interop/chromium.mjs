#!/usr/bin/env node
// Chromium peer for the interop matrix: drives the gateway's own browser pages (/publish/{stream}
// and /watch/{stream}) in a headless Chromium and speaks the driver protocol of
// tests/interop/README.md (JSON lines on stdout, logs on stderr).
//
//   chromium.mjs publish --url http://HOST:PORT/whip/STREAM --codec h264|vp8 [--token T] [--simulcast]
//   chromium.mjs play    --url http://HOST:PORT/whep/STREAM --seconds S [--token T] [--screenshot PNG]
//                        [--switch-layers] [--trace]
//
// Requirements:
//   - playwright-core from npm (it downloads no browser), found through NODE_PATH:
//       npm install --prefix DIR playwright-core
//       NODE_PATH=DIR/node_modules node tests/interop/chromium.mjs ...
//     ES modules ignore NODE_PATH, so the package is loaded with a CommonJS `require` made by
//     createRequire, which does search NODE_PATH.
//   - Chromium: /usr/bin/chromium, or the path in $CHROMIUM.
// $WISHCAST_DRIVER_DEBUG=1 copies the pages' console to stderr.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

const USAGE = 'usage: chromium.mjs publish --url WHIP_URL --codec h264|vp8 [--token T] [--relay-only] [--simulcast]\n'
  + '       chromium.mjs play --url WHEP_URL --seconds S [--token T] [--screenshot PATH] [--relay-only]'
  + ' [--switch-layers] [--trace]';

const FLAGS = [
  '--no-sandbox',
  '--headless',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
];

/** How long a publisher may take from launch to sending frames. */
const PUBLISH_TIMEOUT_MS = 30000;
/** How long a simulcast publisher may take, once live, until every layer is being encoded. */
const LAYERS_TIMEOUT_MS = 20000;
/** How long a switch of layers may take to reach the screen before it counts as failed. */
const SWITCH_TIMEOUT_MS = 20000;
/** How often a traced player reads its statistics. */
const TRACE_POLL_MS = 50;
/** How often a traced player reports its counters when nothing else changed. */
const TRACE_TICK_MS = 500;
/** SIGTERM to exit, at most (the protocol allows 5 s). */
const STOP_DEADLINE_MS = 4500;

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function log(...args) {
  process.stderr.write(`chromium.mjs: ${args.join(' ')}\n`);
}

function fail(message, code = 1) {
  emit({ event: 'error', message: String(message) });
  process.exit(code);
}

function parseArgs(argv) {
  const [command, ...rest] = argv;
  if (command !== 'publish' && command !== 'play') throw new Error(USAGE);
  const args = { command };
  for (let i = 0; i < rest.length; i += 1) {
    const name = rest[i];
    if (name === '--relay-only') {
      // The page offers relayed candidates only, from the TURN servers the gateway names.
      args.relay = true;
      continue;
    }
    if (name === '--simulcast') {
      // The publisher page sends three layers (#simulcast=1).
      args.simulcast = true;
      continue;
    }
    if (name === '--switch-layers') {
      // The player picks the smallest layer, then auto again, and times both switches.
      args.switchLayers = true;
      continue;
    }
    if (name === '--trace') {
      // After the first frame the player reports what it renders and decodes as it changes.
      args.trace = true;
      continue;
    }
    const value = rest[i + 1];
    if (!['--url', '--codec', '--token', '--seconds', '--screenshot'].includes(name)) {
      throw new Error(`unknown argument ${name}\n${USAGE}`);
    }
    if (value === undefined) throw new Error(`${name} needs a value`);
    args[name.slice(2)] = value;
    i += 1;
  }
  if (!args.url) throw new Error(`--url is required\n${USAGE}`);
  if (command === 'publish') {
    args.codec = (args.codec || '').toLowerCase();
    if (!['h264', 'vp8'].includes(args.codec)) throw new Error('--codec must be h264 or vp8');
  } else {
    args.seconds = Number(args.seconds);
    if (!Number.isFinite(args.seconds) || args.seconds <= 0) throw new Error('--seconds must be a positive number');
  }
  return args;
}

/** The page of the gateway that serves an endpoint: /whip/S -> /publish/S, /whep/S -> /watch/S. */
function pageUrl(endpoint, fragment) {
  const u = new URL(endpoint);
  const m = u.pathname.match(/^(.*)\/(whip|whep)\/([^/]+)$/);
  if (!m) throw new Error(`${endpoint} is not a /whip/{stream} or /whep/{stream} URL`);
  u.pathname = `${m[1]}/${m[2] === 'whip' ? 'publish' : 'watch'}/${m[3]}`;
  u.search = '';
  u.hash = new URLSearchParams(fragment).toString();
  return u.href;
}

async function launch() {
  let chromium;
  try {
    ({ chromium } = require('playwright-core'));
  } catch (e) {
    throw new Error(`playwright-core not found (set NODE_PATH to its node_modules): ${e.message}`);
  }
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    // The driver handles signals itself: the page must send its DELETE before the browser goes.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const context = await browser.newContext({
    permissions: ['camera', 'microphone'],
    viewport: { width: 1280, height: 800 },
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => log('page error:', e.message));
  if (process.env.WISHCAST_DRIVER_DEBUG) page.on('console', (m) => log('console:', m.text()));
  return { browser, page };
}

/** Runs `handler` once on SIGTERM or SIGINT. */
function onSignal(handler) {
  let done = false;
  const once = () => {
    if (done) return;
    done = true;
    handler();
  };
  process.on('SIGTERM', once);
  process.on('SIGINT', once);
}

async function publish(args) {
  // 360p with the resolution held: the browser otherwise starts small and scales up as its
  // bandwidth estimate grows, and each viewer must see the size announced here. Simulcast
  // takes 720p: libwebrtc sends as many layers as the size allows, two at 360p and 480p.
  const fragment = {
    autostart: '1',
    codec: args.codec,
    source: 'camera',
    height: args.simulcast ? '720' : '360',
    keep: '1',
  };
  if (args.simulcast) fragment.simulcast = '1';
  if (args.token) fragment.token = args.token;
  if (args.relay) fragment.relay = '1';
  const url = pageUrl(args.url, fragment);
  const { browser, page } = await launch();
  let stopping = false;
  onSignal(async () => {
    stopping = true;
    const watchdog = setTimeout(() => fail('the DELETE did not finish in time'), STOP_DEADLINE_MS);
    try {
      const status = await page.evaluate(async () => {
        await window.wishcast.stop();
        return window.wishcast.deleteStatus;
      });
      emit({ event: 'deleted', status });
      clearTimeout(watchdog);
      await browser.close().catch(() => {});
      process.exit(0);
    } catch (e) {
      fail(`stop failed: ${e.message}`);
    }
  });

  log('opening', url.replace(/token=[^&]*/, 'token=…'));
  await page.goto(url);
  const sending = await page.evaluate(async ({ timeoutMs, layersMs, layers }) => {
    const until = performance.now() + timeoutMs;
    let allLayersBy = null;
    while (performance.now() < until) {
      const w = window.wishcast;
      if (w && (w.state === 'error' || w.state === 'unauthorized')) return { error: `${w.state}: ${w.message}` };
      if (w && w.state === 'live' && w.pc) {
        const report = await w.pc.getStats();
        // One outbound video stream per simulcast layer: the largest is the size sent.
        const videos = [];
        let audio = null;
        for (const s of report.values()) {
          if (s.type !== 'outbound-rtp') continue;
          if (s.kind === 'video') videos.push(s);
          if (s.kind === 'audio') audio = s;
        }
        const encoding = videos.filter((s) => s.framesEncoded > 0 && s.frameWidth);
        encoding.sort((a, b) => b.frameHeight - a.frameHeight);
        const video = encoding[0];
        allLayersBy ??= video ? performance.now() + layersMs : null;
        // Layers start as the bandwidth estimate allows: wait a while for all of them.
        const waiting = layers && encoding.length < videos.length && performance.now() < allLayersBy;
        if (video && !waiting) {
          const codec = report.get(video.codecId);
          return {
            width: video.frameWidth,
            height: video.frameHeight,
            audio: Boolean(audio && w.pc.getSenders().some((s) => s.track && s.track.kind === 'audio')),
            codec: codec ? codec.mimeType.replace(/^video\//i, '').toLowerCase() : null,
            // As the page's statistics overlay reports it.
            path: w.path,
            ...(layers ? {
              layers: videos.map((s) => ({
                rid: s.rid ?? null,
                width: s.frameWidth ?? 0,
                height: s.frameHeight ?? 0,
                frames: s.framesEncoded ?? 0,
                limit: s.qualityLimitationReason ?? null,
                encoder: s.encoderImplementation ?? null,
              })),
            } : {}),
          };
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const w = window.wishcast;
    return { error: `not sending after ${timeoutMs} ms (state ${w ? w.state : 'none'}: ${w ? w.message : ''})` };
  }, { timeoutMs: PUBLISH_TIMEOUT_MS, layersMs: LAYERS_TIMEOUT_MS, layers: Boolean(args.simulcast) });
  if (stopping) return;
  if (sending.error) {
    await browser.close().catch(() => {});
    fail(sending.error);
  }
  emit({ event: 'publishing', ...sending });
  // Keep running until a signal; log the page's state changes.
  let last = 'live';
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    if (stopping) return;
    const state = await page.evaluate(() => `${window.wishcast.state} ${window.wishcast.message}`).catch(() => null);
    if (state && state !== last) {
      log('publisher state:', state);
      last = state;
    }
  }
}

async function play(args) {
  const started = Date.now();
  const deadline = started + args.seconds * 1000;
  const fragment = {};
  if (args.token) fragment.token = args.token;
  if (args.relay) fragment.relay = '1';
  const url = pageUrl(args.url, fragment);
  const { browser, page } = await launch();
  let cut = false;
  onSignal(() => {
    cut = true;
  });

  log('opening', url.replace(/token=[^&]*/, 'token=…'));
  await page.goto(url);

  // The first decoded frame, polled in the page every 50 ms, timed against the page's clock.
  const first = await page.evaluate(async (ms) => {
    const until = performance.now() + ms;
    while (performance.now() < until) {
      const w = window.wishcast;
      if (w && (w.state === 'error' || w.state === 'unauthorized')) return { error: `${w.state}: ${w.message}` };
      if (w && w.pc) {
        const report = await w.pc.getStats();
        for (const s of report.values()) {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0) {
            return {
              ms: Math.round(performance.now() - w.postAt),
              width: s.frameWidth,
              height: s.frameHeight,
            };
          }
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return null;
  }, Math.max(0, deadline - Date.now()));
  if (first && first.error) {
    await browser.close().catch(() => {});
    fail(first.error);
  }

  let nonuniform = false;
  if (first) {
    emit({ event: 'first_frame', ...first });
    nonuniform = await page.evaluate(checkPicture).catch((e) => {
      log('picture check failed:', e.message);
      return false;
    });
    if (args.screenshot) {
      // The page polls its own state; give its badge a moment to say live.
      await page.waitForFunction(() => window.wishcast.state === 'live', null, { timeout: 1000 }).catch(() => {});
      await page.screenshot({ path: args.screenshot });
      log('screenshot saved to', args.screenshot);
    }
  }

  if (first && args.switchLayers && !cut) {
    const left = Math.max(0, deadline - Date.now());
    const outcome = await page.evaluate(switchLayers, { budgetMs: left, switchMs: SWITCH_TIMEOUT_MS });
    for (const e of outcome) emit(e);
  }

  if (first && args.trace && !cut) {
    await page.evaluate(installTrace);
    let lastTick = 0;
    // The longest wait between two presented frames since the last tick, the one still
    // going on included.
    let gap = 0;
    while (Date.now() < deadline && !cut) {
      const sample = await page.evaluate(traceSample).catch((e) => ({ error: e.message }));
      if (sample.error) {
        log('trace failed:', sample.error);
        break;
      }
      for (const e of sample.events) emit(e);
      const { tick } = sample;
      gap = Math.max(gap, tick.gap_ms, tick.last_presented ? tick.t - tick.last_presented : 0);
      if (tick.t - lastTick >= TRACE_TICK_MS) {
        lastTick = tick.t;
        emit({ event: 'tick', ...tick, gap_ms: gap });
        gap = 0;
      }
      await new Promise((r) => setTimeout(r, TRACE_POLL_MS));
    }
  }

  while (Date.now() < deadline && !cut) await new Promise((r) => setTimeout(r, 100));

  const summary = await page.evaluate(async () => {
    const w = window.wishcast;
    const out = { frames: 0, width: 0, height: 0, audio_packets: 0, codec: null };
    if (w.pc) {
      const report = await w.pc.getStats();
      for (const s of report.values()) {
        if (s.type !== 'inbound-rtp') continue;
        if (s.kind === 'video') {
          out.frames = s.framesDecoded ?? 0;
          out.width = s.frameWidth ?? 0;
          out.height = s.frameHeight ?? 0;
          const codec = report.get(s.codecId);
          if (codec) out.codec = codec.mimeType.replace(/^video\//i, '').toLowerCase();
        } else if (s.kind === 'audio') {
          out.audio_packets = s.packetsReceived ?? 0;
        }
      }
    }
    // As the page's statistics overlay reports it.
    out.path = w.path;
    await w.stop();
    out.delete_status = w.deleteStatus;
    return out;
  });
  emit({ event: 'summary', ...summary, nonuniform });
  await browser.close().catch(() => {});
  process.exit(0);
}

/**
 * In the page: once the `layers` event lists the stream's layers and the automatic choice put
 * the largest on screen, pins the smallest, then returns to automatic choice, and times each
 * switch from just before its POST to the first statistics read showing the new size (frames
 * of that size decoded). Where the event gives no size, the largest layer's is the height
 * automatic choice settles on, and the smallest's any lower one. Returns the events to print:
 * `layers`, then one `switch` per direction, or an `error`.
 */
async function switchLayers({ budgetMs, switchMs }) {
  const w = window.wishcast;
  const until = performance.now() + budgetMs;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const height = async () => {
    const report = await w.pc?.getStats();
    for (const s of report?.values() ?? []) {
      if (s.type === 'inbound-rtp' && s.kind === 'video') return s.frameHeight ?? 0;
    }
    return 0;
  };
  const out = [];
  const waitFor = async (what, test, ms) => {
    const stop = Math.min(until, performance.now() + ms);
    while (performance.now() < stop) {
      if (test()) return true;
      await sleep(50);
    }
    const now = `layers ${JSON.stringify(w.layers)}, playing ${JSON.stringify(w.playing)}`;
    out.push({ event: 'error', message: `not within ${ms} ms: ${what} (${now})` });
    return false;
  };
  const listed = () => w.canSelectLayer && w.layers.length >= 3 && w.layers.every((l) => l.bitrate > 0);
  if (!await waitFor('the layer link and three active layers', listed, 20000)) return out;
  const top = w.layers[0];
  let topHeight = top.height;
  if (topHeight) {
    if (!await waitFor(`the largest layer (${topHeight}p) on screen`, () => w.playing?.height === topHeight, 20000)) return out;
  } else {
    // Settled: the same height for two seconds.
    let seen = null;
    let since = performance.now();
    const settled = () => {
      const h = w.playing?.height ?? null;
      if (h !== seen) [seen, since] = [h, performance.now()];
      return h !== null && performance.now() - since >= 2000;
    };
    if (!await waitFor('a settled picture size', settled, 20000)) return out;
    topHeight = seen;
  }
  out.push({ event: 'layers', layers: w.layers, playing: w.playing });

  /** Selects `rid` (null: auto) and times it until `reached(height)`; every size seen on the way. */
  const timed = async (rid, target, reached = (h) => h === target) => {
    const t0 = performance.now();
    const status = await w.selectLayer(rid);
    const postMs = Math.round(performance.now() - t0);
    const steps = [];
    let last = await height();
    const stop = Math.min(until, t0 + switchMs);
    while (performance.now() < stop) {
      const h = await height();
      if (h !== last) {
        steps.push({ ms: Math.round(performance.now() - t0), height: h });
        last = h;
      }
      if (reached(h)) break;
      await sleep(20);
    }
    return {
      event: 'switch',
      to: rid ?? 'auto',
      status,
      post_ms: postMs,
      ms: reached(last) ? Math.round(performance.now() - t0) : null,
      height: last,
      target,
      steps,
      layer: w.layer,
    };
  };
  const small = w.layers[w.layers.length - 1];
  const down = await timed(small.rid, small.height, (h) => (small.height ? h === small.height : h > 0 && h < topHeight));
  out.push(down);
  if (down.ms === null) return out;
  // Let the small layer play a while, as a viewer who picked it would.
  await sleep(2000);
  out.push(await timed(null, topHeight));
  return out;
}

/**
 * In the page: follows the frames the <video> element presents (requestVideoFrameCallback)
 * and its size changes (`resize`), for `traceSample` to read. Times are wall-clock
 * milliseconds (Date.now()), which the test compares with its own clock.
 */
function installTrace() {
  const { video } = window.wishcast;
  const trace = {
    // Each change of the presented frames' size: { t, width, height }, not yet reported.
    rendered: [],
    size: null,
    presented: 0,
    lastPresented: null,
    // The longest wait between two presented frames since the last report.
    gap: 0,
    resized: [],
  };
  window.wishcastTrace = trace;
  if (video.requestVideoFrameCallback) {
    const onFrame = (_now, meta) => {
      const t = Date.now();
      trace.presented += 1;
      if (trace.lastPresented !== null) trace.gap = Math.max(trace.gap, t - trace.lastPresented);
      trace.lastPresented = t;
      if (!trace.size || trace.size.width !== meta.width || trace.size.height !== meta.height) {
        trace.size = { width: meta.width, height: meta.height };
        trace.rendered.push({ t, ...trace.size });
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  video.addEventListener('resize', () => {
    trace.resized.push({ t: Date.now(), width: video.videoWidth, height: video.videoHeight });
  });
}

/**
 * In the page: what changed since the last call, as events to print (`rendered`: the size of
 * the presented frames changed; `resized`: the <video> element's; `decoded`: the decoder's
 * output, from the statistics), and the counters as a `tick`.
 */
async function traceSample() {
  const w = window.wishcast;
  const trace = window.wishcastTrace;
  const report = await w.pc?.getStats();
  const t = Date.now();
  let v = null;
  for (const s of report?.values() ?? []) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') v = s;
  }
  const events = [];
  for (const r of trace.rendered.splice(0)) events.push({ event: 'rendered', ...r });
  for (const r of trace.resized.splice(0)) events.push({ event: 'resized', ...r });
  const decoded = v?.frameHeight ? { width: v.frameWidth, height: v.frameHeight } : null;
  if (decoded && (decoded.width !== trace.decoded?.width || decoded.height !== trace.decoded?.height)) {
    trace.decoded = decoded;
    events.push({ event: 'decoded', t, ...decoded });
  }
  const tick = {
    t,
    frames: v?.framesDecoded ?? 0,
    received: v?.framesReceived ?? 0,
    packets: v?.packetsReceived ?? 0,
    // The jitter buffer's delay, summed over the frames it let out (ms), and their count.
    buffer_ms: Math.round(1000 * (v?.jitterBufferDelay ?? 0)),
    buffered: v?.jitterBufferEmittedCount ?? 0,
    keyframes: v?.keyFramesDecoded ?? 0,
    dropped: v?.framesDropped ?? 0,
    freezes: v?.freezeCount ?? 0,
    freeze_ms: Math.round(1000 * (v?.totalFreezesDuration ?? 0)),
    lost: v?.packetsLost ?? 0,
    nacks: v?.nackCount ?? 0,
    plis: v?.pliCount ?? 0,
    bytes: v?.bytesReceived ?? 0,
    presented: trace.presented,
    last_presented: trace.lastPresented,
    gap_ms: trace.gap,
    session: w.sessionUrl,
    layers: w.layers,
    layer: w.layer,
  };
  trace.gap = 0;
  return { events, tick };
}

/**
 * In the page: draws the current video frame to a canvas and tells whether it is a picture
 * rather than one flat colour (a decoder fed garbage, or a black frame, gives a flat one).
 */
async function checkPicture() {
  const video = window.wishcast.video;
  const until = performance.now() + 3000;
  while ((video.readyState < 2 || !video.videoWidth) && performance.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!video.videoWidth) return false;
  // Wait for a frame to be presented, so the canvas copies a real one.
  if (video.requestVideoFrameCallback) {
    await Promise.race([
      new Promise((r) => video.requestVideoFrameCallback(r)),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
  }
  const scale = Math.min(1, 320 / video.videoWidth);
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(video.videoWidth * scale));
  canvas.height = Math.max(1, Math.round(video.videoHeight * scale));
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let min = 255;
  let max = 0;
  let sum = 0;
  let sumSq = 0;
  const n = data.length / 4;
  for (let i = 0; i < data.length; i += 4) {
    const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    min = Math.min(min, y);
    max = Math.max(max, y);
    sum += y;
    sumSq += y * y;
  }
  const sd = Math.sqrt(Math.max(0, sumSq / n - (sum / n) ** 2));
  return max - min > 16 && sd > 2;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    fail(e.message, 2);
  }
  try {
    if (args.command === 'publish') await publish(args);
    else await play(args);
  } catch (e) {
    fail(e && e.message ? e.message : e);
  }
}

main();
