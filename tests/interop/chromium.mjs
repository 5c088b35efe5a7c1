#!/usr/bin/env node
// Chromium peer for the interop matrix: drives the gateway's own browser pages (/publish/{stream}
// and /watch/{stream}) in a headless Chromium and speaks the driver protocol of
// tests/interop/README.md (JSON lines on stdout, logs on stderr).
//
//   chromium.mjs publish --url http://HOST:PORT/whip/STREAM --codec h264|vp8 [--token T]
//   chromium.mjs play    --url http://HOST:PORT/whep/STREAM --seconds S [--token T] [--screenshot PNG]
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

const USAGE = 'usage: chromium.mjs publish --url WHIP_URL --codec h264|vp8 [--token T] [--relay-only]\n'
  + '       chromium.mjs play --url WHEP_URL --seconds S [--token T] [--screenshot PATH] [--relay-only]';

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
  // bandwidth estimate grows, and each viewer must see the size announced here.
  const fragment = { autostart: '1', codec: args.codec, source: 'camera', height: '360', keep: '1' };
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
  const sending = await page.evaluate(async (timeoutMs) => {
    const until = performance.now() + timeoutMs;
    while (performance.now() < until) {
      const w = window.wishcast;
      if (w && (w.state === 'error' || w.state === 'unauthorized')) return { error: `${w.state}: ${w.message}` };
      if (w && w.state === 'live' && w.pc) {
        const report = await w.pc.getStats();
        let video = null;
        let audio = null;
        for (const s of report.values()) {
          if (s.type !== 'outbound-rtp') continue;
          if (s.kind === 'video') video = s;
          if (s.kind === 'audio') audio = s;
        }
        if (video && video.framesEncoded > 0 && video.frameWidth) {
          const codec = report.get(video.codecId);
          return {
            width: video.frameWidth,
            height: video.frameHeight,
            audio: Boolean(audio && w.pc.getSenders().some((s) => s.track && s.track.kind === 'audio')),
            codec: codec ? codec.mimeType.replace(/^video\//i, '').toLowerCase() : null,
            // As the page's statistics overlay reports it.
            path: w.path,
          };
        }
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const w = window.wishcast;
    return { error: `not sending after ${timeoutMs} ms (state ${w ? w.state : 'none'}: ${w ? w.message : ''})` };
  }, PUBLISH_TIMEOUT_MS);
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
