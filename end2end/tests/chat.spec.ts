// The second app (examples/chat-app/): the declaration API is not the demo's alone. A chat room, served
// by its own release build on a database of its own; its page streams in order (InOrder).
import { expect, test, type Page } from '@playwright/test';
import { type ChildProcess } from 'node:child_process';
import { bin, startApp } from './servers';

let server: ChildProcess | undefined;
let url = '';

test.beforeAll(async () => {
  test.skip(!bin, 'E2E_SERVER_BIN names the release builds');
  ({ url, proc: server } = await startApp('chat-app', 'chat-site'));
});

test.afterAll(() => {
  server?.kill('SIGKILL');
});

const messages = (page: Page) => page.getByRole('list', { name: 'Messages' }).getByRole('listitem');
const unique = (what: string) => `${what} ${Math.random().toString(36).slice(2, 8)}`;

async function say(page: Page, author: string, text: string): Promise<void> {
  await page.getByLabel('Name').fill(author);
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

async function live(page: Page, path = '/'): Promise<void> {
  // Hydrated: the tab's sync runtime opened its socket.
  const socket = page.waitForEvent('websocket');
  await page.goto(`${url}${path}`);
  await socket;
  await expect(page.getByRole('heading', { name: '#lobby' })).toBeVisible();
}

test('a message shows at once, in every open browser, and stays', async ({ browser }) => {
  const [a, b] = [await browser.newPage(), await browser.newPage()];
  await live(a);
  await live(b);
  const text = unique('hello');
  // Sent over the sync connection: no page load.
  let loads = 0;
  a.on('load', () => loads++);
  await say(a, 'ann', text);
  await expect(messages(a).last()).toHaveText(`ann: ${text}`);
  await expect(a.getByLabel('Message', { exact: true })).toHaveValue('');
  await expect(messages(b).last()).toHaveText(`ann: ${text}`);
  expect(loads).toBe(0);
  // The server rendered it into the page's HTML (in order: no script needed to show it).
  const html = await (await a.request.get(url)).text();
  expect(html).toContain(text);
});

test('a message the server refuses rolls back and says why', async ({ page }) => {
  await live(page);
  const before = await messages(page).count();
  await say(page, 'ann', 'x'.repeat(501));
  await expect(page.getByRole('alert')).toHaveText('Give a name and 1 to 500 characters.');
  await expect(messages(page)).toHaveCount(before);
});

// The same room in the streaming modes that put parts in place with a script: the rows a
// streamed part hydrates with are the server's, and then they are live.
for (const [mode, path] of [['OutOfOrder', '/streamed'], ['PartiallyBlocked', '/blocked']]) {
  test(`streamed ${mode}, the room hydrates without errors and is live`, async ({ browser }) => {
    const [a, b] = [await browser.newPage(), await browser.newPage()];
    const errors: string[] = [];
    a.on('pageerror', (e) => errors.push(e.message));
    a.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await live(b);
    const first = unique('before');
    await say(b, 'ann', first);
    await expect(messages(b).last()).toHaveText(`ann: ${first}`);
    await live(a, path);
    await expect(messages(a).last()).toHaveText(`ann: ${first}`);
    const second = unique('after');
    await say(b, 'ann', second);
    await expect(messages(a).last()).toHaveText(`ann: ${second}`);
    await say(a, 'bea', unique('from a'));
    await expect(messages(b).last()).toContainText('bea: from a');
    expect(errors).toEqual([]);
  });
}

// A tab reopened over its rows cache, older than the server's: the streamed part hydrates with
// the rows the server rendered (not the cache's), then goes live.
for (const [mode, path] of [['OutOfOrder', '/streamed'], ['PartiallyBlocked', '/blocked']]) {
  test(`streamed ${mode} over an older cache, the room hydrates with the server's rows`, async ({ browser }) => {
    const context = await browser.newContext();
    const b = await browser.newPage();
    let a = await context.newPage();
    await live(a, path);
    await say(a, 'ann', unique('cached'));
    await expect(messages(a).last()).toContainText('ann: cached');
    await a.close();
    // Written while the tab is closed: its cache does not have it.
    const missed = unique('missed');
    await live(b);
    await say(b, 'bea', missed);
    await expect(messages(b).last()).toHaveText(`bea: ${missed}`);
    a = await context.newPage();
    const errors: string[] = [];
    a.on('pageerror', (e) => errors.push(e.message));
    a.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    await live(a, path);
    await expect(messages(a).last()).toHaveText(`bea: ${missed}`);
    const next = unique('next');
    await say(b, 'bea', next);
    await expect(messages(a).last()).toHaveText(`bea: ${next}`);
    expect(errors).toEqual([]);
    await context.close();
  });
}

test.describe('without JavaScript', () => {
  test.use({ javaScriptEnabled: false });

  test('the page has the messages, and the form sends one', async ({ page }) => {
    await page.goto(url);
    const text = unique('plain');
    await say(page, 'bob', text);
    await expect(page).toHaveURL(`${url}/`);
    await expect(messages(page).last()).toHaveText(`bob: ${text}`);
    // Refused: back with the reason, nothing added.
    const count = await messages(page).count();
    await say(page, 'bob', '   ');
    await expect(page.getByRole('alert')).toHaveText('Give a name and 1 to 500 characters.');
    await expect(messages(page)).toHaveCount(count);
  });
});
