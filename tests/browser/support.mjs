// What the browser tier's test files share: the built `herald`, Debian's Chromium, a hub
// started as a child process on a free port, and a proxy that can cut connections.

import net from 'node:net';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const herald = process.env.HERALD_BIN ?? path.join(root, 'target/debug/herald');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const KEY = 'browser-tier-key';

// Every test is bounded, so a bug fails the tier instead of hanging CI.
const LIMIT = { timeout: 60_000 };
export const test = (name, fn) => nodeTest(name, LIMIT, fn);

/**
 * Starts `herald serve` (on a free port unless `--listen` is given, on the memory store unless
 * `--store` is given, with the tier's key and `--anonymous` unless told otherwise); resolves with
 * `{ child, url, banner }`, `banner` being what it printed before it listened.
 */
export function startHub(args, { key = true, anonymous = true } = {}) {
  const defaults = [
    ...(args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0']),
    ...(args.includes('--store') ? [] : ['--store', 'memory']),
    ...(key ? ['--jwt-key', KEY] : []),
    ...(anonymous ? ['--anonymous'] : []),
  ];
  const child = spawn(herald, ['serve', ...defaults, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const banner = [];
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stderr });
    lines.on('line', (line) => {
      const m = line.match(/^herald listening on (https?:\/\/\S+)$/);
      if (m) resolve({ child, url: m[1], banner });
      else banner.push(line);
    });
    child.on('error', (err) => reject(new Error(`cannot start ${herald}: ${err.message}`)));
    child.on('exit', (code) => reject(new Error(`herald serve exited with ${code}`)));
  });
}

/**
 * Starts a hub serving HTTPS with its own `--tls-self-signed` certificate (kept in a temporary
 * file store) and plaintext beside it, and a Chromium that trusts that certificate through the
 * SPKI hash the hub prints. Resolves with `{ hub, httpsUrl, httpUrl, browser, close }`.
 */
export async function startTlsHubAndBrowser(name) {
  const dir = mkdtempSync(path.join(tmpdir(), `herald-${name}-`));
  const hub = await startHub([
    '--store', `file:${path.join(dir, 'data')}`,
    '--tls-self-signed',
    '--listen', '127.0.0.1:0',
    '--listen', 'http://127.0.0.1:0',
  ]);
  const httpUrl = hub.banner.map((l) => l.match(/^also:\s+(http:\/\/\S+?)\/?$/)).find(Boolean)[1];
  const spki = hub.banner
    .map((l) => l.match(/--ignore-certificate-errors-spki-list=(\S+)/))
    .find(Boolean)[1];
  const browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${spki}`]);
  return {
    hub,
    httpsUrl: hub.url,
    httpUrl,
    browser,
    async close() {
      await browser.close();
      await stopHub(hub);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Ends a hub started by `startHub` and waits for it. */
export async function stopHub(hub) {
  if (!hub || hub.child.exitCode !== null || hub.child.signalCode !== null) return;
  const exited = new Promise((r) => hub.child.once('exit', r));
  hub.child.kill('SIGTERM');
  await exited;
}

export const launchBrowser = (extraArgs = []) => chromium.launch({
  executablePath: chromiumPath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', ...extraArgs],
});

/** A token from `herald token` with the tier's key, e.g. `token('--publish', '*')`. */
export const token = (...args) =>
  execFileSync(herald, ['token', '--key', KEY, ...args]).toString().trim();

/** A TCP proxy in front of a server (the hub, an example) that can drop every connection and refuse new ones. */
export function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    const upstream = net.connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        cut() { refusing = true; for (const s of sockets) s.destroy(); },
        restore() { refusing = false; },
        close() { refusing = true; for (const s of sockets) s.destroy(); server.close(); },
      })));
}
