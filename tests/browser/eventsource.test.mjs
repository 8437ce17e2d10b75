// Browser tier: a real headless Chromium (Debian's, driven by playwright-core) uses its native
// EventSource against a real `herald serve`: on the hub's own origin, across origins with CORS,
// and through dropped connections, after which it must reconnect by itself and receive exactly
// what was published meanwhile (Last-Event-ID replay).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test, startHub, launchBrowser, token, startProxy } from './support.mjs';

let hub, hubUrl, browser, proxy, pageServer, pageOrigin;

const publisherToken = () => token('--publish', '*');

async function publish(topic, data, id, url = hubUrl) {
  const body = new URLSearchParams({ topic, data, id });
  const res = await fetch(`${url}/.well-known/mercure`, {
    method: 'POST',
    headers: { authorization: `Bearer ${publisherToken()}` },
    body,
  });
  assert.equal(res.status, 200, await res.text());
}

before(async () => {
  // The page server's origin must be known before the hub starts, for --cors-origin.
  pageServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>other origin</title><p>cross-origin page</p>');
  });
  await new Promise((r) => pageServer.listen(0, '127.0.0.1', r));
  pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;
  hub = await startHub(['--cors-origin', pageOrigin, '--heartbeat', '1']);
  hubUrl = hub.url;
  proxy = await startProxy(hubUrl);
  browser = await launchBrowser();
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  proxy?.close();
  pageServer?.close();
  hub?.child.kill('SIGTERM');
});

test("a page of the hub's origin receives updates with native EventSource", async () => {
  const page = await browser.newPage();
  await page.goto(`${hubUrl}/`);
  await page.evaluate(() => {
    window.received = [];
    window.opens = 0;
    const es = new EventSource('/.well-known/mercure?topic=' +
      encodeURIComponent('https://example.com/page/{id}'));
    es.onopen = () => { window.opens += 1; };
    es.onmessage = (e) => window.received.push(e.lastEventId + '  ' + e.data);
  });
  await page.waitForFunction(() => window.opens === 1);
  await publish('https://example.com/page/1', 'hello from herald', 'page-1');
  await publish('https://example.com/other', 'not subscribed', 'page-2');
  await publish('https://example.com/page/3', 'second', 'page-3');
  await page.waitForFunction(() => window.received.length >= 2);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(await page.evaluate(() => window.received),
    ['page-1  hello from herald', 'page-3  second']);
  await page.close();
});

test('reconnects by itself after the connection drops and gets exactly what it missed', async () => {
  const page = await browser.newPage();
  await page.goto(`${proxy.url}/`);
  await page.evaluate(() => {
    window.received = [];
    window.opens = 0;
    const es = new EventSource('/.well-known/mercure?topic=https://example.com/drop');
    es.onopen = () => { window.opens += 1; };
    es.onmessage = (e) => window.received.push(e.lastEventId + '=' + e.data);
  });
  await page.waitForFunction(() => window.opens === 1);
  await publish('https://example.com/drop', 'a', 'drop-1');
  await page.waitForFunction(() => window.received.length === 1);
  proxy.cut();
  await publish('https://example.com/drop', 'b', 'drop-2');
  await publish('https://example.com/drop', 'c', 'drop-3');
  await new Promise((r) => setTimeout(r, 500));
  proxy.restore();
  await page.waitForFunction(() => window.received.length >= 3 && window.opens >= 2, null, { timeout: 20000 });
  await publish('https://example.com/drop', 'd', 'drop-4');
  await page.waitForFunction(() => window.received.length >= 4);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await page.evaluate(() => window.received), ['drop-1=a', 'drop-2=b', 'drop-3=c', 'drop-4=d']);
  await page.close();
});

test('survives a hub restart: reconnects and receives what was published meanwhile', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-browser-'));
  let first = await startHub(['--store', `file:${dir}`]);
  const port = new URL(first.url).port;
  const page = await browser.newPage();
  try {
    await page.goto(`${first.url}/`);
    await page.evaluate(() => {
      window.received = [];
      window.opens = 0;
      const es = new EventSource('/.well-known/mercure?topic=https://example.com/restart');
      es.onopen = () => { window.opens += 1; };
      es.onmessage = (e) => window.received.push(e.lastEventId + '=' + e.data);
    });
    await page.waitForFunction(() => window.opens === 1);
    await publish('https://example.com/restart', 'before', 'restart-1', first.url);
    await page.waitForFunction(() => window.received.length === 1);
    first.child.kill('SIGTERM');
    await new Promise((r) => first.child.once('exit', r));
    // Same port, same data: the browser's EventSource comes back by itself (about 3 s later)
    // with Last-Event-ID, and the hub replays what was published while it was away.
    const second = await startHub(['--store', `file:${dir}`, '--listen', `127.0.0.1:${port}`]);
    first = second;
    await publish('https://example.com/restart', 'while away', 'restart-2', second.url);
    await page.waitForFunction(() => window.received.length >= 2 && window.opens >= 2, null, { timeout: 20000 });
    await publish('https://example.com/restart', 'live again', 'restart-3', second.url);
    await page.waitForFunction(() => window.received.length >= 3);
    assert.deepEqual(await page.evaluate(() => window.received),
      ['restart-1=before', 'restart-2=while away', 'restart-3=live again']);
  } finally {
    await page.close();
    const exited = first.child.exitCode !== null || first.child.signalCode !== null;
    first.child.kill('SIGTERM');
    if (!exited) await new Promise((r) => first.child.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}.head`, { force: true }); // the store's record, kept beside it
  }
});

test('a page on an allowed origin subscribes with credentials (CORS)', async () => {
  const page = await browser.newPage();
  await page.goto(`${pageOrigin}/`);
  const opened = page.evaluate((hub) => new Promise((resolve) => {
    const es = new EventSource(`${hub}/.well-known/mercure?topic=https://example.com/cors`, { withCredentials: true });
    es.onmessage = (e) => { resolve(e.data); es.close(); };
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) resolve('error'); };
    window.es = es;
  }), hubUrl);
  await page.waitForFunction(() => window.es && window.es.readyState === EventSource.OPEN);
  await publish('https://example.com/cors', 'across origins', 'cors-1');
  assert.equal(await opened, 'across origins');
  await page.close();
});

test('a page on another origin is refused by CORS', async () => {
  const other = await startHub([]); // no --cors-origin at all
  try {
    const page = await browser.newPage();
    await page.goto(`${pageOrigin}/`);
    const state = await page.evaluate((hub) => new Promise((resolve) => {
      const es = new EventSource(`${hub}/.well-known/mercure?topic=x`, { withCredentials: true });
      es.onopen = () => resolve('open');
      es.onerror = () => resolve(es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    }), other.url);
    assert.equal(state, 'closed');
    await page.close();
  } finally {
    other.child.kill('SIGTERM');
  }
});
