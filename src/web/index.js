// The stream list: polls GET /api/streams (with the admin token when auth is on) and links each
// stream to its player, with its WHEP and WHIP URLs.

import {
  authHeaders, bindTokenForm, copyText, el, loadToken, problemDetail,
} from './common.js';

const REFRESH_MS = 3000;
const status = document.getElementById('status');
const table = document.getElementById('streams');
const tbody = table.querySelector('tbody');
let token = loadToken();
let timer = null;

function urlFor(kind, name) {
  return new URL(`/${kind}/${encodeURIComponent(name)}`, location.href).href;
}

function copyRow(label, url) {
  const button = el('button', { type: 'button' }, 'Copy');
  button.addEventListener('click', async () => {
    button.textContent = (await copyText(url)) ? 'Copied' : 'Copy failed';
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  });
  return el('div', {}, el('span', { class: 'kind' }, label), el('code', {}, url), button);
}

function render(streams) {
  tbody.replaceChildren();
  for (const s of streams) {
    const name = String(s.name);
    const nameCell = el('td', {},
      el('a', { href: `/watch/${encodeURIComponent(name)}` }, name),
      ' · ',
      el('a', { href: `/publish/${encodeURIComponent(name)}`, class: 'muted' }, 'publish'));
    const state = el('td', { class: s.live ? 'state-live' : 'state-idle' }, s.live ? 'live' : 'no publisher');
    const endpoints = el('td', { class: 'endpoints' },
      copyRow('WHEP', urlFor('whep', name)),
      copyRow('WHIP', urlFor('whip', name)));
    tbody.append(el('tr', {}, nameCell, state, el('td', {}, String(s.viewers ?? 0)), endpoints));
  }
  table.hidden = streams.length === 0;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const res = await fetch('/api/streams', { headers: authHeaders(token), cache: 'no-store' });
    if (res.ok) {
      const body = await res.json();
      const streams = Array.isArray(body.streams) ? body.streams : [];
      streams.sort((a, b) => String(a.name).localeCompare(String(b.name)));
      render(streams);
      status.textContent = streams.length ? '' : 'No streams yet. Publish one below, or with OBS or GStreamer.';
    } else {
      render([]);
      const detail = await problemDetail(res);
      if (res.status === 401) status.textContent = 'The stream list needs an admin token: enter it above.';
      else if (res.status === 403) status.textContent = 'This token is not an admin token; the stream list needs one.';
      else status.textContent = `Could not list streams: ${detail}`;
    }
  } catch (e) {
    status.textContent = `Could not reach the gateway: ${e.message}`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

bindTokenForm(token, (t) => {
  token = t;
  refresh();
});

document.getElementById('publish-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = document.getElementById('publish-name').value.trim();
  if (name) location.href = `/publish/${encodeURIComponent(name)}`;
});

refresh();
