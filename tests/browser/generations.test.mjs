// Browser tier: Mercure 0.x and 1.0 on one running hub, through Chromium's native EventSource.
// Written from the two spec versions: raw and multiple topics, several selectors, URI template
// (0.x) or URL Pattern (1.0) matching, what must not match, and private updates authorized by
// each generation's cookie (0.x `mercureAuthorization` with a JWT's `mercure` claim, 1.0
// `__Secure-mercure_access_token` with an `at+jwt` access token). One set of publishes, every
// one answered 200, reaches the subscribers of both generations. Over HTTPS (the hub's own
// self-signed certificate, trusted by its SPKI hash), since a `__Secure-` cookie needs it.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test, startTlsHubAndBrowser, token, KEY } from './support.mjs';

let tls, hub, httpsUrl, httpUrl, browser;

before(async () => {
  tls = await startTlsHubAndBrowser('generations');
  ({ hub, httpsUrl, httpUrl, browser } = tls);
}, { timeout: 60_000 });

after(async () => {
  await tls?.close();
});

const b64url = (value) => Buffer.from(value).toString('base64url');

/** A Mercure 1.0 access token (RFC 9068 `at+jwt`, HS256 with the tier's key). */
function accessToken(claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'at+jwt' }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.createHmac('sha256', KEY).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function publish(fields) {
  const body = new URLSearchParams();
  for (const [k, v] of fields) body.append(k, v);
  const res = await fetch(`${httpUrl}/.well-known/mercure`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token('--publish', '*')}` },
    body,
  });
  assert.equal(res.status, 200, `${JSON.stringify(fields)}: ${await res.text()}`);
}

/** A page of the hub's HTTPS origin, in a browser context holding only `cookie`, with one
 *  EventSource per query of `queries`; resolves once all are open. */
async function pageWith(cookie, queries) {
  const context = await browser.newContext();
  await context.addCookies([{ ...cookie, url: httpsUrl, secure: true, httpOnly: true }]);
  const page = await context.newPage();
  await page.goto(`${httpsUrl}/healthz`);
  await page.evaluate((queries) => {
    window.received = {};
    window.opened = 0;
    for (const [name, query] of Object.entries(queries)) {
      window.received[name] = [];
      const source = new EventSource(`/.well-known/mercure?${query}`);
      source.onopen = () => { window.opened++; };
      source.onmessage = (e) => window.received[name].push(e.data);
    }
  }, queries);
  await page.waitForFunction((n) => window.opened === n, Object.keys(queries).length);
  return { context, page };
}

const enc = encodeURIComponent;

test('0.x and 1.0 subscribers on one hub each match as their spec says', async () => {
  const zero = await pageWith(
    { name: 'mercureAuthorization', value: token('--subscribe', 'https://example.com/private/{id}') },
    {
      raw: `topic=${enc('https://example.com/books/1')}`,
      multiple: `topic=${enc('https://example.com/books/1')}&topic=${enc('https://example.com/authors/1')}`,
      template: `topic=${enc('https://example.com/books/{id}')}`,
      private: `topic=${enc('https://example.com/private/{id}')}`,
    },
  );
  const audience = `${httpsUrl}/.well-known/mercure`;
  const one = await pageWith(
    {
      name: '__Secure-mercure_access_token',
      value: accessToken({
        exp: Math.floor(Date.now() / 1000) + 600,
        aud: audience,
        authorization_details: [{
          type: 'mercure',
          actions: ['subscribe'],
          topics: [{ match: 'https://example.com/private/:id', match_type: 'urlpattern' }],
        }],
      }),
    },
    {
      raw: `match=${enc('https://example.com/books/1')}`,
      multiple: `match=${enc('https://example.com/books/1')}&match_exact=${enc('https://example.com/authors/1')}`,
      template: `match_urlpattern=${enc('https://example.com/books/:id')}`,
      private: `match_urlpattern=${enc('https://example.com/private/:id')}`,
    },
  );
  for (const [topic, data, extra] of [
    ['https://example.com/books/1', 'book 1'],
    ['https://example.com/authors/1', 'author 1'],
    ['https://example.com/books/2', 'book 2'],
    ['https://example.com/books/1/reviews', 'review, matches no selector'],
    ['https://example.com/other', 'other, matches no selector'],
    ['https://example.com/private/7', 'private 7', ['private', 'on']],
    ['https://example.com/books/{id}', 'literal braces'],
  ]) {
    await publish([['topic', topic], ['data', data], ...(extra ? [extra] : [])]);
  }
  const expected = {
    zero: {
      raw: ['book 1'],
      multiple: ['book 1', 'author 1'],
      // A 0.x template also matches its own text.
      template: ['book 1', 'book 2', 'literal braces'],
      private: ['private 7'],
    },
    one: {
      raw: ['book 1'],
      multiple: ['book 1', 'author 1'],
      // `:id` matches one path segment; `{id}` is text to 1.0's URL pattern, not a template.
      template: ['book 1', 'book 2', 'literal braces'],
      private: ['private 7'],
    },
  };
  for (const [name, side] of [['zero', zero], ['one', one]]) {
    const want = expected[name];
    const total = Object.values(want).reduce((n, list) => n + list.length, 0);
    await side.page.waitForFunction(
      (total) => Object.values(window.received).reduce((n, l) => n + l.length, 0) >= total,
      total,
      { timeout: 10_000 },
    ).catch(() => {});
    // A moment more, for anything that should not have come.
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await side.page.evaluate(() => window.received), want, name);
    await side.context.close();
  }
});

test("each generation's cookie authorizes only that generation's subscriptions", async () => {
  const audience = `${httpsUrl}/.well-known/mercure`;
  const oneToken = accessToken({
    exp: Math.floor(Date.now() / 1000) + 600,
    aud: audience,
    authorization_details: [{ type: 'mercure', actions: ['subscribe'], topics: [{ match: '*' }] }],
  });
  // The 1.0 cookie on a 0.x subscription is not read: the private update does not reach it.
  const crossed = await pageWith(
    { name: '__Secure-mercure_access_token', value: oneToken },
    { zero: `topic=${enc('https://example.com/secret')}`, one: `match=${enc('https://example.com/secret')}` },
  );
  await publish([['topic', 'https://example.com/secret'], ['data', 'secret'], ['private', 'on']]);
  await publish([['topic', 'https://example.com/secret'], ['data', 'public']]);
  await crossed.page.waitForFunction(() => window.received.one.length >= 2, null, { timeout: 10_000 });
  await crossed.page.waitForFunction(() => window.received.zero.length >= 1, null, { timeout: 10_000 });
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await crossed.page.evaluate(() => window.received), {
    zero: ['public'],
    one: ['secret', 'public'],
  });
  await crossed.context.close();
});
