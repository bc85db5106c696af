// Accounts and private lists: two users in two browser contexts. A private list is read and
// written by its owner and the users it is shared with only, on every path (the page, a `sub`,
// the snapshot GET, an event, a plain form); a client id is its user's; sharing and unsharing
// take effect on open connections; after sign-out nothing of a private list stays in IndexedDB.
import { expect, test, type Browser, type Page } from '@playwright/test';
import { randomUUID } from 'node:crypto';
import { addTodo, settled, titles, waitReady } from './helpers';

const PASSWORD = 'correct-horse-battery';

function userName(): string {
  return `u${randomUUID().slice(0, 8)}`;
}

/** A new context (its own cookies and storage) with `name` signed up and on `/`. */
async function signedUp(browser: Browser, name: string, js = true): Promise<Page> {
  const page = await (await browser.newContext({ javaScriptEnabled: js })).newPage();
  await page.goto('/signup');
  await page.getByLabel('User name').fill(name);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign up' }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByTestId('user-name')).toHaveText(name);
  await waitReady(page, js);
  return page;
}

/** Makes a private list and opens it; its id. */
async function newPrivateList(page: Page, js = true): Promise<string> {
  await page.getByRole('button', { name: 'New private list' }).click();
  await expect(page).toHaveURL(/\/lists\/[0-9a-zA-Z_-]+$/);
  await waitReady(page, js);
  return new URL(page.url()).pathname.split('/').pop()!;
}

/** Opens a raw sync socket from `page` (its cookies, so its identity), says `hello` as
 *  `clientId`, sends `msgs`, and answers the messages the server sent until `until` matched
 *  one (or 5 s passed). */
async function rawSocket(
  page: Page,
  clientId: string,
  msgs: object[],
  until: string,
): Promise<Array<Record<string, any>>> {
  return page.evaluate(
    ({ clientId, msgs, until }) =>
      new Promise<Array<Record<string, any>>>((resolve) => {
        const got: Array<Record<string, any>> = [];
        const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/sssync/ws`);
        const done = () => {
          ws.close();
          resolve(got);
        };
        const timer = setTimeout(done, 5000);
        ws.onopen = () => {
          ws.send(JSON.stringify({ t: 'hello', protocol: 1, client_id: clientId }));
          for (const m of msgs) ws.send(JSON.stringify(m));
        };
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          got.push(m);
          if (JSON.stringify(m).includes(until)) {
            clearTimeout(timer);
            done();
          }
        };
        ws.onclose = () => {
          clearTimeout(timer);
          resolve(got);
        };
      }),
    { clientId, msgs, until },
  );
}

/** Everything this browser keeps in IndexedDB `sssync` (every store's keys and values), as text. */
function storedText(page: Page): Promise<string> {
  return page.evaluate(
    () =>
      new Promise<string>((resolve) => {
        const req = indexedDB.open('sssync');
        req.onerror = () => resolve('');
        req.onsuccess = () => {
          const db = req.result;
          const names = Array.from(db.objectStoreNames);
          if (names.length === 0) {
            db.close();
            resolve('');
            return;
          }
          const tx = db.transaction(names);
          const parts: string[] = [];
          let left = names.length * 2;
          const one = () => {
            left -= 1;
            if (left === 0) {
              db.close();
              resolve(parts.join('\n'));
            }
          };
          for (const n of names) {
            const keys = tx.objectStore(n).getAllKeys();
            keys.onsuccess = () => {
              parts.push(JSON.stringify(keys.result));
              one();
            };
            keys.onerror = one;
            const values = tx.objectStore(n).getAll();
            values.onsuccess = () => {
              parts.push(JSON.stringify(values.result));
              one();
            };
            values.onerror = one;
          }
        };
      }),
  );
}

for (const js of [true, false]) {
  test(`signing up, in and out ${js ? 'with' : 'without'} JavaScript`, async ({ browser }) => {
    const name = userName();
    const page = await signedUp(browser, name, js);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect(page.getByRole('link', { name: 'Sign in' })).toBeVisible();
    await expect(page.getByTestId('user-name')).toHaveCount(0);

    await page.goto('/login');
    await page.getByLabel('User name').fill(name);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page.getByRole('alert')).toHaveText('Wrong user name or password.');

    await page.getByLabel('User name').fill(name);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page).toHaveURL(/\/$/);
    await expect(page.getByTestId('user-name')).toHaveText(name);
  });
}

test('a private list is nobody else’s: by page, sub, snapshot GET, event, plain form, client id', async ({ browser }) => {
  const alice = await signedUp(browser, userName());
  // Alice's client id, as her tab says it in its hello.
  const aliceIds: string[] = [];
  alice.on('websocket', (ws) =>
    ws.on('framesent', (f) => {
      const text = typeof f.payload === 'string' ? f.payload : f.payload.toString();
      const m = JSON.parse(text);
      if (m.t === 'hello') aliceIds.push(m.client_id);
    }),
  );
  // A page load, so that the hello is seen (a new private list opens without one).
  await alice.reload();
  const list = await newPrivateList(alice);
  await addTodo(alice, 'alice secret');
  await settled(alice, true);
  await expect.poll(() => aliceIds.length).toBeGreaterThan(0);

  const bob = await signedUp(browser, userName());
  const anonymous = await (await browser.newContext()).newPage();
  // By page: 404, and nothing of its todos.
  for (const who of [bob, anonymous]) {
    const response = await who.goto(`/lists/${list}`);
    expect(response?.status()).toBe(404);
    await expect(who.getByRole('alert')).toHaveText('This list does not exist, or you may not see it.');
    expect(await who.content()).not.toContain('alice secret');
    await expect(titles(who)).toHaveCount(0);
  }
  // By snapshot GET.
  const args = encodeURIComponent(JSON.stringify({ list_id: list }));
  const snapshot = await bob.request.get(`/sssync/snapshot/todos?a=${args}`);
  expect(snapshot.status()).toBe(403);
  expect(await snapshot.text()).not.toContain('alice secret');

  await bob.goto('/');
  await waitReady(bob, true);
  // By `sub`: forbidden, no rows.
  const sub = await rawSocket(bob, `probe-${randomUUID()}`, [{ t: 'sub', q: 'todos', a: { list_id: list } }], 'forbidden');
  expect(sub.some((m) => m.t === 'error' && m.code === 'forbidden' && m.q === 'todos')).toBe(true);
  expect(sub.some((m) => m.t === 'snapshot' || m.t === 'delta')).toBe(false);
  expect(JSON.stringify(sub)).not.toContain('alice secret');
  // By event: rejected with forbidden.
  const event = await rawSocket(
    bob,
    `probe-${randomUUID()}`,
    [{ t: 'event', seq: 1, name: 'add_todo', args: { id: randomUUID(), list_id: list, title: 'bob by socket' } }],
    '"reject"',
  );
  expect(event.some((m) => m.t === 'reject' && m.error?.code === 'forbidden')).toBe(true);
  // By plain form post.
  const form = await bob.request.post('/api/add_todo', {
    form: { list_id: list, title: 'bob by form', sssync_key: randomUUID() },
    headers: { Accept: 'text/html' },
    maxRedirects: 0,
  });
  expect(form.status()).toBe(302);
  // Claiming Alice's client id: refused.
  const claim = await rawSocket(bob, aliceIds[0], [], 'forbidden');
  expect(claim.some((m) => m.t === 'error' && m.code === 'forbidden')).toBe(true);
  expect(claim.some((m) => m.t === 'welcome')).toBe(false);

  // Alice's list is untouched, and her tab goes on.
  await alice.reload();
  await waitReady(alice, true);
  await expect(titles(alice)).toHaveText(['alice secret']);
  await addTodo(alice, 'still mine');
  await settled(alice, true);
});

test('sharing and unsharing take effect on open connections', async ({ browser }) => {
  const aliceName = userName();
  const bobName = userName();
  const alice = await signedUp(browser, aliceName);
  const list = await newPrivateList(alice);
  await addTodo(alice, 'for two');
  await settled(alice, true);
  const bob = await signedUp(browser, bobName);
  await expect(bob.getByTestId('sync-status')).toHaveText('live');

  // Shared: Bob's open page lists it at once.
  await alice.getByLabel('Share with').fill(bobName);
  await alice.getByRole('button', { name: 'Share', exact: true }).click();
  await waitReady(alice, true);
  const link = bob.locator(`a.private-list[href="/lists/${list}"]`);
  await expect(link).toContainText(`shared by ${aliceName}`);
  await link.click();
  await expect(titles(bob)).toHaveText(['for two']);
  await addTodo(bob, 'from bob');
  await expect(titles(alice)).toHaveText(['for two', 'from bob']);

  // Unshared: Bob's open list ends with forbidden, its rows gone.
  await alice.getByRole('button', { name: `Stop sharing with ${bobName}` }).click();
  await expect(bob.getByRole('alert')).toHaveText('This list does not exist, or you may not see it.');
  await expect(titles(bob)).toHaveCount(0);
  await expect(link).toHaveCount(0);
  await expect.poll(() => storedText(bob)).not.toContain('for two');
});

test('after signing out, nothing of a private list is left in IndexedDB', async ({ browser }) => {
  const alice = await signedUp(browser, userName());
  const list = await newPrivateList(alice);
  await addTodo(alice, 'private words');
  await settled(alice, true);
  // The rows cache has it while she is signed in.
  await expect.poll(() => storedText(alice)).toContain('private words');

  await alice.getByRole('button', { name: 'Sign out' }).click();
  await expect(alice.getByRole('link', { name: 'Sign in' })).toBeVisible();
  await waitReady(alice, true);
  await expect(alice.getByTestId('sync-status')).toHaveText('live');
  await expect.poll(() => storedText(alice)).not.toContain('private words');
  expect(await storedText(alice)).not.toContain(list);
  // And the page at its URL is a 404 now.
  const response = await alice.goto(`/lists/${list}`);
  expect(response?.status()).toBe(404);
});
