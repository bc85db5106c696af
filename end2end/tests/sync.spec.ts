// The demo on sssync: server-rendered rows hydrate without a second fetch, and writes in one
// browser reach every other browser live.
import { expect, test } from '@playwright/test';
import { addTodo, item, items, newTodo, openFreshList, settled, titles, waitReady } from './helpers';

test('hydration makes no fetch or XHR request', async ({ page }) => {
  const id = await openFreshList(page, true);
  await addTodo(page, 'rendered by the server');
  await settled(page, true);
  const requests: string[] = [];
  page.on('request', (r) => {
    if (r.resourceType() === 'fetch' || r.resourceType() === 'xhr') requests.push(r.url());
  });
  await page.goto(`/lists/${id}`);
  await waitReady(page, true);
  await expect(page.locator('html.hydrated')).toHaveCount(1);
  await expect(titles(page)).toHaveText(['rendered by the server']);
  // The connection is live (a write goes through the WebSocket, not a request).
  await addTodo(page, 'and one more');
  await expect(titles(page)).toHaveText(['rendered by the server', 'and one more']);
  expect(requests).toEqual([]);
});

test('two browsers see each other’s adds, toggles and deletes within a second', async ({ browser }) => {
  const a = await (await browser.newContext()).newPage();
  const b = await (await browser.newContext()).newPage();
  const id = await openFreshList(a, true);
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  const live = { timeout: 1_000 };

  await addTodo(a, 'from a');
  await expect(titles(b)).toHaveText(['from a'], live);
  await addTodo(b, 'from b');
  await expect(titles(a)).toHaveText(['from a', 'from b'], live);

  await item(b, 'from a').getByRole('checkbox', { name: 'Toggle Todo' }).click();
  await expect(item(a, 'from a')).toHaveClass('completed', live);

  const row = item(a, 'from b');
  await row.hover();
  await row.getByRole('button', { name: 'Delete' }).click();
  await expect(titles(b)).toHaveText(['from a'], live);
  await expect(items(a)).toHaveCount(1);
});

test('a write without JavaScript reaches a live browser', async ({ browser }) => {
  const live = await (await browser.newContext()).newPage();
  const id = await openFreshList(live, true);
  const nojs = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
  await nojs.goto(`/lists/${id}`);
  await addTodo(nojs, 'posted by a plain form');
  await expect(titles(live)).toHaveText(['posted by a plain form'], { timeout: 1_000 });
});

test('offline: writes wait (the indicator counts them), then apply once; the browser catches up', async ({ browser }) => {
  const ctxA = await browser.newContext();
  const a = await ctxA.newPage();
  const b = await (await browser.newContext()).newPage();
  const id = await openFreshList(a, true);
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  const status = a.getByTestId('sync-status');
  await expect(status).toHaveText('live');

  await ctxA.setOffline(true);
  await expect(status).toHaveText('offline');
  await addTodo(b, 'while a was away');
  await addTodo(a, 'written offline'); // shown at once, predicted
  await expect(status).toHaveText('offline, 1 write pending');
  // The add's own pending state: the list is busy until the server has it.
  await expect(a.locator('ul.todo-list')).toHaveAttribute('aria-busy', 'true');
  await expect(titles(b)).toHaveText(['while a was away']);

  await ctxA.setOffline(false);
  await expect(status).toHaveText('live', { timeout: 10_000 });
  await expect(a.locator('ul.todo-list')).toHaveAttribute('aria-busy', 'false');
  await expect(titles(a)).toHaveText(['while a was away', 'written offline']);
  await expect(titles(b)).toHaveText(['while a was away', 'written offline']);
  // Applied exactly once: the server renders it once.
  const html = await (await a.request.get(`/lists/${id}`)).text();
  expect(html.split('>written offline</label>').length - 1).toBe(1);
});

test('without JavaScript the indicator says the page is not live', async ({ browser }) => {
  const page = await (await browser.newContext({ javaScriptEnabled: false })).newPage();
  await openFreshList(page, false);
  await expect(page.getByTestId('sync-status')).toHaveText('offline');
});

test('two tabs of one browser see each other’s writes at once, also offline', async ({ browser }) => {
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  const b = await ctx.newPage();
  const id = await openFreshList(a, true);
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  await expect(b.getByTestId('sync-status')).toHaveText('live');
  const now = { timeout: 1_000 };

  await ctx.setOffline(true);
  await expect(a.getByTestId('sync-status')).toHaveText('offline');
  await expect(b.getByTestId('sync-status')).toHaveText('offline');
  await addTodo(a, 'written offline in tab a');
  await expect(titles(b)).toHaveText(['written offline in tab a'], now);
  await addTodo(b, 'and in tab b');
  await expect(titles(a)).toHaveText(['written offline in tab a', 'and in tab b'], now);

  // Back online: each tab sends its own writes once; both converge on the server's rows (in the
  // order the server applied them, which depends on which tab reconnected first).
  await ctx.setOffline(false);
  for (const p of [a, b]) {
    await expect(p.getByTestId('sync-status')).toHaveText('live', { timeout: 10_000 });
  }
  await expect(a.getByTestId('sync-status')).toHaveText('live');
  await expect(titles(a)).toHaveCount(2);
  await expect(titles(b)).toHaveText(await titles(a).allTextContents());
  expect((await titles(a).allTextContents()).sort()).toEqual(['and in tab b', 'written offline in tab a']);
  const html = await (await a.request.get(`/lists/${id}`)).text();
  expect(html.split('>written offline in tab a</label>').length - 1).toBe(1);
  expect(html.split('>and in tab b</label>').length - 1).toBe(1);
});

test('an edit in progress survives another browser’s change to the list', async ({ browser }) => {
  const a = await (await browser.newContext()).newPage();
  const b = await (await browser.newContext()).newPage();
  const id = await openFreshList(a, true);
  await addTodo(a, 'edit me');
  await addTodo(a, 'other');
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  const edit = a.getByRole('textbox', { name: 'Edit' });
  await item(a, 'edit me').getByTestId('todo-title').dblclick();
  await edit.fill('edited while b writes');
  await addTodo(b, 'added by b');
  await expect(items(a)).toHaveCount(3, { timeout: 2_000 });
  await expect(edit).toHaveValue('edited while b writes');
  await expect(edit).toBeFocused();
  await edit.press('Enter');
  await expect(titles(b)).toHaveText(['edited while b writes', 'other', 'added by b'], { timeout: 2_000 });
});

test('an add whose acknowledgement is lost with its connection settles after the reconnect', async ({ page }) => {
  // The first ack the server sends is dropped and the connection closed with it; the next
  // connections pass through.
  let dropped = false;
  await page.routeWebSocket('**/sssync/ws', (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => {
      if (!dropped && typeof m === 'string' && m.includes('"t":"ack"')) {
        dropped = true;
        ws.close();
        server.close();
        return;
      }
      ws.send(m);
    });
  });
  const id = await openFreshList(page, true);
  await settled(page, true);
  await newTodo(page).fill('acknowledged on a lost connection');
  await newTodo(page).press('Enter');
  await expect.poll(() => dropped).toBe(true);
  // The server applied it; the tab learns so from the next connection's welcome: the add's
  // action is no longer pending.
  await settled(page, true);
  await expect(page.locator('ul.todo-list')).toHaveAttribute('aria-busy', 'false');
  await expect(titles(page)).toHaveText(['acknowledged on a lost connection']);
  await expect(page.getByTestId('todo-count')).toContainText('1');
  // Applied once.
  const other = await (await page.context().browser()!.newContext()).newPage();
  await other.goto(`/lists/${id}`);
  await expect(titles(other)).toHaveText(['acknowledged on a lost connection']);
});
