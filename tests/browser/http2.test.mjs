// Browser tier: why HTTPS and HTTP/2 in the hub matter. A page of the hub's origin opens 12
// native EventSources. Over HTTPS the hub speaks HTTP/2 and all 12 share one connection, so all
// 12 open and receive; over plain HTTP/1.1 Chromium allows 6 connections per host, so only 6
// open and the others wait. The certificate is the hub's own `--tls-self-signed` one, trusted
// through the SPKI hash the hub prints (`--ignore-certificate-errors-spki-list`).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { test, startTlsHubAndBrowser, token } from './support.mjs';

let tls, hub, httpsUrl, httpUrl, browser;

before(async () => {
  tls = await startTlsHubAndBrowser('h2');
  ({ hub, httpsUrl, httpUrl, browser } = tls);
}, { timeout: 60_000 });

after(async () => {
  await tls?.close();
});

/** Opens 12 EventSources from a page of `origin`, publishes once, and reports how many opened
 *  and how many received the update within a few seconds. */
async function twelveSources(origin, topic) {
  const page = await browser.newPage();
  await page.goto(`${origin}/healthz`);
  await page.evaluate((topic) => {
    window.opened = 0;
    window.received = 0;
    window.sources = [];
    for (let i = 0; i < 12; i++) {
      const source = new EventSource(`/.well-known/mercure?topic=${topic}`);
      source.onopen = () => { window.opened++; };
      source.onmessage = () => { window.received++; };
      window.sources.push(source);
    }
  }, topic);
  // Long enough for every source that can open to do so.
  await page.waitForFunction(() => window.opened >= 6, null, { timeout: 10_000 });
  await new Promise((r) => setTimeout(r, 1500));
  const res = await fetch(`${httpUrl}/.well-known/mercure`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token('--publish', '*')}` },
    body: new URLSearchParams({ topic, data: 'hello' }),
  });
  assert.equal(res.status, 200, await res.text());
  await new Promise((r) => setTimeout(r, 1500));
  const result = await page.evaluate(() => ({ opened: window.opened, received: window.received }));
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  await page.close();
  return { ...result, protocol };
}

test('over HTTPS (HTTP/2) all 12 EventSources of a page open and receive', async () => {
  assert.ok(httpsUrl.startsWith('https://localhost:'), httpsUrl);
  const { opened, received, protocol } = await twelveSources(httpsUrl, 'h2');
  assert.equal(protocol, 'h2');
  assert.equal(opened, 12);
  assert.equal(received, 12);
});

test('over plain HTTP/1.1 only 6 of them open: the browser limit HTTP/2 removes', async () => {
  const { opened, received, protocol } = await twelveSources(httpUrl, 'h1');
  assert.equal(protocol, 'http/1.1');
  assert.equal(opened, 6);
  assert.equal(received, 6);
});
