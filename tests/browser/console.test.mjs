// Browser tier: the web console the hub serves at `/`, driven in headless Chromium as a user
// would: in the default authorized mode (no key configured: the console mints tokens), with a
// configured key (tokens pasted, private updates), and with --anonymous. The first test saves a
// screenshot of the console to target/browser/console.png (docs/console.png is one of them).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test, root, startHub, stopHub, launchBrowser, token } from './support.mjs';

let browser;
const hubs = [];

before(async () => { browser = await launchBrowser(); }, { timeout: 60_000 });
after(async () => {
  await browser?.close();
  for (const hub of hubs) await stopHub(hub);
});

async function hubWith(args, options) {
  const hub = await startHub(args, options);
  hubs.push(hub);
  return hub;
}

const text = (page, selector) => page.$eval(selector, (el) => el.textContent.trim());
const waitText = (page, selector, wanted) => page.waitForFunction(
  ([s, w]) => document.querySelector(s)?.textContent.includes(w), [selector, wanted]);

/** The console's rows of received events, oldest first, as [id, type, data]. */
const events = (page) => page.$$eval('#events tr', (rows) =>
  rows.map((r) => [...r.cells].slice(1).map((c) => c.textContent)).reverse());

async function subscribe(page, topics, lastId = '') {
  await page.fill('#sub-topics', topics);
  await page.fill('#sub-last-id', lastId);
  await page.click('#subscribe');
}

async function publish(page, { topic, data, type = '', id = '', isPrivate = false }) {
  await page.fill('#pub-topics', topic);
  await page.fill('#pub-data', data);
  await page.fill('#pub-type', type);
  await page.fill('#pub-id', id);
  await page.setChecked('#pub-private', isPrivate);
  await page.click('#publish');
}

test('default authorized mode: the 401 is explained, tokens are minted, an update goes through and the counters move', async () => {
  const hub = await hubWith([], { key: false, anonymous: false });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(`${hub.url}/`);

  // Without a token the hub refuses, and the page says why instead of a bare "closed".
  await subscribe(page, 'https://example.com/books/{id}');
  await waitText(page, '#sub-error', '401');
  assert.match(await text(page, '#sub-error'), /requires a subscriber JWT/);
  assert.equal(await text(page, '#sub-state'), 'closed');

  // A hub that made its own key lets its console mint tokens for this machine.
  await page.waitForSelector('button.mint[data-role=subscriber]', { state: 'visible' });
  await page.click('button.mint[data-role=subscriber]');
  await page.click('button.mint[data-role=publisher]');
  await page.waitForFunction(() =>
    document.querySelector('#sub-token').value && document.querySelector('#pub-token').value);

  await subscribe(page, 'https://example.com/books/{id}');
  await waitText(page, '#sub-state', 'open');
  await waitText(page, '#c-subscribers', '1');
  await publish(page, { topic: 'https://example.com/books/1', data: '{"title":"Dune"}', type: 'book', id: 'dune-1' });
  await waitText(page, '#pub-result', 'Published: dune-1');
  await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 1);
  assert.deepEqual(await events(page), [['dune-1', 'book', '{"title":"Dune"}']]);
  for (const [i, title] of ['Hyperion', 'Solaris', 'Foundation'].entries()) {
    await publish(page, { topic: `https://example.com/books/${i + 2}`, data: JSON.stringify({ title }) });
    await waitText(page, '#pub-result', 'Published: urn:uuid:');
    await page.waitForFunction((n) => document.querySelectorAll('#events tr').length === n, i + 2);
  }
  await waitText(page, '#c-published', '4');
  await page.waitForFunction(() => Number(document.querySelector('#c-history').textContent) === 4);
  assert.equal(await text(page, '#store'), 'store ready');
  // Rates are charted from the differences between polls: give the charts a few points.
  await new Promise((r) => setTimeout(r, 2500));
  mkdirSync(path.join(root, 'target/browser'), { recursive: true });
  await page.screenshot({ path: path.join(root, 'target/browser/console.png'), fullPage: true });
  await page.close();
});

test('with a configured key: tokens are pasted, a private update reaches its subscriber, resume from an id', async () => {
  const hub = await hubWith([], { key: true, anonymous: false });
  const page = await browser.newPage();
  await page.goto(`${hub.url}/`);
  await waitText(page, '#tokens-help', 'Paste the JWTs');
  assert.equal(await page.isVisible('button.mint'), false, 'no minting with a configured key');

  await page.fill('#sub-token', token('--subscribe', 'https://example.com/private/{id}'));
  await page.fill('#pub-token', token('--publish', '*'));
  await subscribe(page, 'https://example.com/private/{id}');
  await waitText(page, '#sub-state', 'open');
  await publish(page, { topic: 'https://example.com/private/1', data: 'secret', id: 'p-1', isPrivate: true });
  await waitText(page, '#pub-result', 'Published: p-1');
  await publish(page, { topic: 'https://example.com/private/2', data: 'second', id: 'p-2', isPrivate: true });
  await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 2);
  assert.deepEqual(await events(page), [['p-1', 'message', 'secret'], ['p-2', 'message', 'second']]);

  // Stop, then resume after the first: exactly the second comes back.
  await page.click('#unsubscribe');
  await waitText(page, '#sub-state', 'closed');
  await page.evaluate(() => document.querySelector('#events').replaceChildren());
  await subscribe(page, 'https://example.com/private/{id}', 'p-1');
  await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 1);
  assert.deepEqual(await events(page), [['p-2', 'message', 'second']]);

  // A wrong publisher token: the hub's answer is shown.
  await page.fill('#pub-token', 'not-a-jwt');
  await publish(page, { topic: 'https://example.com/private/3', data: 'x' });
  await waitText(page, '#pub-result', '401');
  assert.match(await text(page, '#pub-result'), /not a JWT/);
  await page.close();
});

test('with --anonymous: subscribing needs no token', async () => {
  const hub = await hubWith([], { key: true, anonymous: true });
  const page = await browser.newPage();
  await page.goto(`${hub.url}/`);
  await subscribe(page, '*');
  await waitText(page, '#sub-state', 'open');
  await page.fill('#pub-token', token('--publish', '*'));
  await publish(page, { topic: 'https://example.com/news', data: 'hello', id: 'n-1' });
  await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 1);
  assert.deepEqual(await events(page), [['n-1', 'message', 'hello']]);
  await waitText(page, '#version', 'anonymous subscribers allowed');
  await page.close();
});

test('accessible and readable on a phone: every field labelled, no sideways scrolling, keyboard reaches the controls', async () => {
  const hub = await hubWith([]);
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(`${hub.url}/`);
  await waitText(page, '#store', 'store ready');
  const unlabelled = await page.$$eval('input, textarea', (els) =>
    els.filter((e) => e.labels.length === 0).map((e) => e.id));
  assert.deepEqual(unlabelled, []);
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
    'the page fits a 390 px wide screen');
  const reached = new Set();
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement?.id));
  }
  for (const id of ['sub-token', 'pub-token', 'sub-topics', 'subscribe', 'pub-topics', 'pub-data', 'publish']) {
    assert.ok(reached.has(id), `Tab reaches #${id}`);
  }
  await page.close();
});

test('reconnection is shown and resumes with Last-Event-ID; subscriptions are listed; dark mode is followed', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'herald-console-'));
  let hub = await startHub(['--store', `file:${dir}`, '--subscriptions']);
  const port = new URL(hub.url).port;
  const page = await browser.newPage({ colorScheme: 'dark' });
  try {
    await page.goto(`${hub.url}/`);
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, 'rgb(18, 20, 23)', 'the dark palette');
    await page.fill('#pub-token', token('--publish', '*'));
    await page.fill('#sub-token', token('--subscribe', '*'));
    await subscribe(page, 'https://example.com/live');
    await waitText(page, '#sub-state', 'open');

    await page.waitForSelector('#subscriptions-section', { state: 'visible' });
    await page.click('#subs-refresh');
    await waitText(page, '#subs-status', '1 active subscription');
    assert.equal(await text(page, '#subs tr td'), 'https://example.com/live');

    await publish(page, { topic: 'https://example.com/live', data: 'before', id: 'r-1' });
    await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 1);
    await stopHub(hub);
    await waitText(page, '#sub-state', 'reconnecting');
    hub = await startHub(['--store', `file:${dir}`, '--subscriptions', '--listen', `127.0.0.1:${port}`]);
    // Published while the console was away: it comes back with Last-Event-ID and gets it.
    const body = new URLSearchParams({ topic: 'https://example.com/live', data: 'while away', id: 'r-2' });
    const res = await fetch(`${hub.url}/.well-known/mercure`, {
      method: 'POST', headers: { authorization: `Bearer ${token('--publish', '*')}` }, body,
    });
    assert.equal(res.status, 200);
    await waitText(page, '#sub-state', 'open');
    await page.waitForFunction(() => document.querySelectorAll('#events tr').length === 2);
    assert.deepEqual(await events(page), [['r-1', 'message', 'before'], ['r-2', 'message', 'while away']]);
  } finally {
    await page.close();
    await stopHub(hub);
    rmSync(dir, { recursive: true, force: true });
    rmSync(`${dir}.head`, { force: true });
  }
});
