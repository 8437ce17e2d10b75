// Browser tier: the programs of examples/, run as their READMEs say, driven in Chromium as a
// user would.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { test, root, launchBrowser, startProxy } from './support.mjs';

const examples = process.env.HERALD_EXAMPLES ?? path.join(root, 'target/debug/examples');
let browser;

/** Starts an example on a free port; resolves with its child process and address. */
function startExample(name) {
  const child = spawn(path.join(examples, name), ['127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`${name} exited with ${code}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const url = line.match(/listening on (http:\/\/\S+?)\/\w+\//)?.[1];
      if (url) resolve({ child, url });
    });
  });
}

before(async () => { browser = await launchBrowser(); }, { timeout: 60_000 });
after(async () => { await browser?.close(); });

test('ai-stream: the answer grows as the model streams it, and resumes after a dropped connection with no token missing or repeated', async () => {
  const example = await startExample('ai-stream');
  const proxy = await startProxy(example.url);
  try {
    const page = await browser.newPage();
    await page.goto(`${proxy.url}/ai/`);
    await page.click('button');
    await page.waitForFunction(() => window.tokens.length >= 5, null, { timeout: 10_000 });
    // Mid-answer: every connection through the proxy is cut, and new ones are refused a while.
    proxy.cut();
    await page.waitForFunction(() => window.errors >= 1, null, { timeout: 10_000 });
    const before = await page.evaluate(() => window.tokens.length);
    await new Promise((r) => setTimeout(r, 600));
    proxy.restore();
    await page.waitForFunction(() => window.total !== null, null, { timeout: 20_000 });
    const { tokens, total, text, errors } = await page.evaluate(() => ({
      tokens: window.tokens, total: window.total, errors: window.errors,
      text: document.getElementById('answer').textContent,
    }));
    assert.ok(errors >= 1, 'the connection did drop');
    assert.ok(before < total, 'it dropped before the end of the answer');
    assert.deepEqual(tokens, [...Array(total).keys()], 'every token once, in order');
    assert.match(text, /^You asked: "What is SSE\?"\. Server-Sent Events .* repeated word\.$/);
    assert.equal(await page.textContent('#state'), 'done');
    await page.close();
  } finally {
    proxy.close();
    example.child.kill('SIGTERM');
  }
});

test('notifications: each user logged in sees only their own private notifications', async () => {
  const example = await startExample('notifications');
  try {
    const users = {};
    for (const name of ['alice', 'bob']) {
      // A context each: separate cookie jars, as two people's browsers.
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${example.url}/app/`);
      await page.fill('input[name=user]', name);
      await page.click('button');
      await page.waitForSelector('#inbox:not([hidden])');
      await page.waitForFunction(() => document.getElementById('state').textContent === 'live');
      users[name] = { context, page };
    }
    const notify = async (to, text) => {
      const res = await fetch(`${example.url}/app/notify`, { method: 'POST', body: new URLSearchParams({ to, text }) });
      assert.equal(res.status, 200, await res.text());
    };
    await notify('alice', 'for alice 1');
    await notify('bob', 'for bob 1');
    await notify('carol', 'for carol, who is not here');
    await notify('alice', 'for alice 2');
    await users.alice.page.waitForFunction(() => window.received.length >= 2);
    await users.bob.page.waitForFunction(() => window.received.length >= 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await users.alice.page.evaluate(() => window.received), ['for alice 1', 'for alice 2']);
    assert.deepEqual(await users.bob.page.evaluate(() => window.received), ['for bob 1']);
    // The token is in an HttpOnly cookie scoped to the hub: the page's scripts never see it.
    assert.equal(await users.alice.page.evaluate(() => document.cookie.includes('mercureAuthorization')), false);
    for (const { context } of Object.values(users)) await context.close();
  } finally {
    example.child.kill('SIGTERM');
  }
});

test('ticker: every current price at once, then live; after a cut, the newest price of each symbol rather than every tick', async () => {
  const example = await startExample('ticker');
  const proxy = await startProxy(example.url);
  try {
    await new Promise((r) => setTimeout(r, 500)); // a few ticks: every symbol has a price
    const page = await browser.newPage();
    const opened = Date.now();
    await page.goto(`${proxy.url}/ticker/`);
    // At once: the retained price of each of the 20 symbols.
    await page.waitForFunction(() => Object.keys(window.prices).length === 20, null, { timeout: 5_000 });
    assert.ok(Date.now() - opened < 3_000, 'shown at once');
    assert.equal(await page.locator('#prices tr').count(), 20);
    // Then live: prices move.
    const before = await page.evaluate(() => window.prices.AAPL.seq);
    await page.waitForFunction((s) => window.prices.AAPL.seq > s, before, { timeout: 5_000 });
    // Cut for 2 s (20 symbols x 10 ticks/s: about 400 ticks published meanwhile).
    proxy.cut();
    await page.waitForFunction(() => window.errors >= 1, null, { timeout: 5_000 });
    const seen = await page.evaluate(() => window.events);
    const cutAt = await page.evaluate(() => Math.max(...Object.values(window.prices).map((p) => p.seq)));
    await new Promise((r) => setTimeout(r, 2_000));
    proxy.restore();
    await page.waitForFunction(() => document.getElementById('state').textContent === 'live', null, { timeout: 10_000 });
    const resumedAt = await page.evaluate(() => window.events);
    // The catch-up is conflated: about one price per symbol, not every tick missed.
    const caughtUp = resumedAt - seen;
    await new Promise((r) => setTimeout(r, 300));
    const after = await page.evaluate(() => window.events) - seen;
    assert.ok(after < 200, `conflated: ${after} events since the cut (${caughtUp} at once), not ~400`);
    // And every price is current again: each symbol has a tick from after the cut.
    await page.waitForFunction((cut) => Object.values(window.prices).every((p) => p.seq > cut), cutAt, { timeout: 5_000 });
    await page.close();
  } finally {
    proxy.close();
    example.child.kill('SIGTERM');
  }
});
