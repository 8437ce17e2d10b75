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
      const url = line.match(/listening on (http:\/\/\S+?)\/ai\//)?.[1];
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
