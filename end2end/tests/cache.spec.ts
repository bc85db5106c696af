// The browser's rows cache (IndexedDB): a client-side navigation to a list the tab does not hold
// shows the list's cached rows at once, also while the sync socket is down, then syncs from the
// cached version; a client-only app's reload does the same.
import { expect, test, type Page } from '@playwright/test';
import { randomUUID } from 'node:crypto';
import { addTodo, openFreshList, settled, titles, waitReady } from './helpers';

/** Routes this page's sync sockets: refused (closed at once) until `allow()` is called, then
 *  through to the server. */
async function gateSocket(page: Page): Promise<() => void> {
  let open = false;
  await page.routeWebSocket('**/sssync/ws', (ws) => {
    if (open) ws.connectToServer();
    else ws.close();
  });
  return () => {
    open = true;
  };
}

test('a client-side navigation shows cached rows at once, offline too, then syncs', async ({ browser }) => {
  const a = await (await browser.newContext()).newPage();
  const cachedList = await openFreshList(a, true);
  await addTodo(a, 'kept in the cache');
  await settled(a, true);

  // Next: another list, loaded with the sync socket refused. Its footer links back.
  const allow = await gateSocket(a);
  await openFreshList(a, true);
  await expect(a.getByTestId('sync-status')).toHaveText('offline');

  // Meanwhile another browser writes to the cached list.
  const b = await (await browser.newContext()).newPage();
  await b.goto(`/lists/${cachedList}`);
  await waitReady(b, true);
  await addTodo(b, 'written elsewhere');
  await settled(b, true);

  // Navigate in the browser (no page load): the cached row shows though nothing reaches the
  // server.
  const documents: string[] = [];
  a.on('request', (r) => {
    if (r.resourceType() === 'document') documents.push(r.url());
  });
  await a.locator(`a.recent-list[href="/lists/${cachedList}"]`).click();
  await expect(a).toHaveURL(new RegExp(`/lists/${cachedList}$`));
  await expect(titles(a)).toHaveText(['kept in the cache']);
  await expect(a.getByTestId('sync-status')).toHaveText('offline');
  expect(documents).toEqual([]);

  // The socket comes back: the list catches up from the cached version.
  allow();
  await expect(titles(a)).toHaveText(['kept in the cache', 'written elsewhere'], { timeout: 10_000 });
  await expect(a.getByTestId('sync-status')).toHaveText('live');
});

const csr = process.env.E2E_CSR_URL;

test('the client-only app shows cached rows on reload while the server is unreachable', async ({ browser }) => {
  test.skip(!csr, 'E2E_CSR_URL is not set (scripts/test.sh serves the CSR build and sets it)');
  const id = randomUUID();
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${csr}/lists/${id}`);
  await waitReady(page, true);
  await settled(page, true);
  await addTodo(page, 'cached for the reload');
  await settled(page, true);

  await gateSocket(page);
  await page.reload();
  await waitReady(page, true);
  await expect(titles(page)).toHaveText(['cached for the reload']);
  await expect(page.getByTestId('sync-status')).toHaveText('offline');
});
