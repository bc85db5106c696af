// What survives the tab: writes made offline are kept in IndexedDB, adopted by the next tab
// and applied exactly once; and without any storage the app still works, from memory.
import { expect, test, type Page } from '@playwright/test';
import { addTodo, item, openFreshList, settled, titles, waitReady } from './helpers';

/** How many pending events the tabs of this browser keep in IndexedDB. */
function keptEvents(page: Page): Promise<number> {
  return page.evaluate(
    () =>
      new Promise<number>((resolve) => {
        const req = indexedDB.open('sssync');
        req.onerror = () => resolve(-1);
        req.onsuccess = () => {
          const db = req.result;
          if (!db.objectStoreNames.contains('queues')) {
            db.close();
            resolve(0);
            return;
          }
          const all = db.transaction('queues').objectStore('queues').getAll();
          all.onerror = () => resolve(-1);
          all.onsuccess = () => {
            const n = (all.result as string[])
              .map((t) => JSON.parse(t).events.length as number)
              .reduce((a, b) => a + b, 0);
            db.close();
            resolve(n);
          };
        };
      }),
  );
}

test('writes made offline survive closing the tab and reach the server exactly once', async ({ browser }) => {
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  const id = await openFreshList(a, true);
  // Welcomed first: the write is then known to be this identity's (a queue kept before its tab
  // knew who was signed in is never sent: the test of that is below).
  await expect(a.getByTestId('sync-status')).toHaveText('live');
  await ctx.setOffline(true);
  await expect(a.getByTestId('sync-status')).toHaveText('offline');
  await addTodo(a, 'survives the tab');
  await expect.poll(() => keptEvents(a)).toBe(1);
  // Close the tab the way a person does (its unload handlers run), and wait until it is gone.
  const b = await ctx.newPage();
  const c = await ctx.newPage();
  await Promise.all([a.waitForEvent('close'), a.close({ runBeforeUnload: true })]);

  // Back online, two tabs open at once: both may send the kept write; it applies once.
  await ctx.setOffline(false);
  await Promise.all([b.goto(`/lists/${id}`), c.goto(`/lists/${id}`)]);
  for (const p of [b, c]) {
    await expect(titles(p)).toHaveText(['survives the tab'], { timeout: 10_000 });
  }
  await expect
    .poll(async () => {
      const html = await (await b.request.get(`/lists/${id}`)).text();
      return html.split('>survives the tab</label>').length - 1;
    })
    .toBe(1);
  await expect.poll(() => keptEvents(b), { timeout: 10_000 }).toBe(0);
});

/** Records, in `page`, whether its list ever showed no item from now on. */
async function watchForVanishing(page: Page): Promise<() => Promise<boolean>> {
  await page.evaluate(() => {
    const w = window as unknown as { __vanished: boolean };
    w.__vanished = false;
    new MutationObserver(() => {
      if (document.querySelectorAll('[data-testid="todo-item"]').length === 0) w.__vanished = true;
    }).observe(document.body, { childList: true, subtree: true, characterData: true });
  });
  return () => page.evaluate(() => (window as unknown as { __vanished: boolean }).__vanished);
}

test('a tab closed offline leaves its write with the open tab, which sends it once when back online', async ({ browser }) => {
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  const id = await openFreshList(a, true);
  const b = await ctx.newPage();
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  // Welcomed first, as above.
  await expect(a.getByTestId('sync-status')).toHaveText('live');
  await ctx.setOffline(true);
  await expect(a.getByTestId('sync-status')).toHaveText('offline');
  await addTodo(a, 'kept by b');
  await expect(titles(b)).toHaveText(['kept by b']);
  const vanished = await watchForVanishing(b);
  // Closed the way a person closes it (its unload handlers run).
  await Promise.all([a.waitForEvent('close'), a.close({ runBeforeUnload: true })]);

  // Back online, with no new tab: the open tab sends the closed tab's write, once.
  await ctx.setOffline(false);
  await expect
    .poll(
      async () => {
        const html = await (await b.request.get(`/lists/${id}`)).text();
        return html.split('>kept by b</label>').length - 1;
      },
      { timeout: 10_000 },
    )
    .toBe(1);
  await expect(titles(b)).toHaveText(['kept by b']);
  await settled(b, true);
  await expect.poll(() => keptEvents(b), { timeout: 10_000 }).toBe(0);
  expect(await vanished(), 'the write left the open tab meanwhile').toBe(false);
});

test('a tab that crashes before hearing its write settled does not leave it predicted in the others', async ({ browser }) => {
  test.setTimeout(90_000);
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  // The server's acknowledgements to `a` are lost once `lose` is set (it dies before hearing).
  let lose = false;
  await a.routeWebSocket('**/sssync/ws', (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => server.send(m));
    server.onMessage((m) => {
      if (lose && typeof m === 'string' && m.includes('"t":"ack"')) return;
      ws.send(m);
    });
  });
  const id = await openFreshList(a, true);
  await addTodo(a, 'to toggle');
  await settled(a, true);
  const b = await ctx.newPage();
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  lose = true;
  await item(a, 'to toggle').getByRole('checkbox', { name: 'Toggle Todo' }).check();
  await expect(item(b, 'to toggle')).toHaveClass('completed');
  await expect(a.getByTestId('sync-status')).not.toHaveText('live');
  // Its renderer crashes: no unload handler runs, nothing is said to the other tabs.
  const cdp = await ctx.newCDPSession(a);
  const crashed = a.waitForEvent('crash');
  // (The command never answers: its page is gone.)
  void cdp.send('Page.crash').catch(() => {});
  await crashed;

  // Another browser un-toggles it: the open tab follows (the dead tab's prediction goes).
  const c = await (await browser.newContext()).newPage();
  await c.goto(`/lists/${id}`);
  await waitReady(c, true);
  await expect(item(c, 'to toggle')).toHaveClass('completed');
  await item(c, 'to toggle').getByRole('checkbox', { name: 'Toggle Todo' }).uncheck();
  await settled(c, true);
  await expect(item(b, 'to toggle')).not.toHaveClass('completed', { timeout: 60_000 });
});

test('with IndexedDB and localStorage throwing, the app still works, live, from memory', async ({ browser }) => {
  const ctx = await browser.newContext();
  await ctx.addInitScript(() => {
    Object.defineProperty(window, 'indexedDB', {
      get() {
        throw new Error('IndexedDB is not available here');
      },
    });
    Object.defineProperty(window, 'localStorage', {
      get() {
        throw new Error('localStorage is not available here');
      },
    });
  });
  const a = await ctx.newPage();
  const errors: string[] = [];
  a.on('pageerror', (e) => errors.push(e.message));
  const id = await openFreshList(a, true);
  await expect(a.getByTestId('sync-status')).toHaveText('live');
  await addTodo(a, 'kept in memory');
  const b = await (await browser.newContext()).newPage();
  await b.goto(`/lists/${id}`);
  await expect(titles(b)).toHaveText(['kept in memory']);
  await addTodo(b, 'and back');
  await expect(titles(a)).toHaveText(['kept in memory', 'and back'], { timeout: 2_000 });
  expect(errors.filter((m) => m.includes('panicked') || m.includes('unreachable'))).toEqual([]);
});

test('a newer version of the app can upgrade the browser database while a tab is open', async ({ browser }) => {
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  await openFreshList(a, true);
  await expect(a.getByTestId('sync-status')).toHaveText('live');
  // The tab has made its stores (so its connection to the database is open).
  await expect
    .poll(() =>
      a.evaluate(
        () =>
          new Promise<boolean>((resolve) => {
            const req = indexedDB.open('sssync');
            req.onerror = () => resolve(false);
            req.onsuccess = () => {
              const has = req.result.objectStoreNames.contains('rows');
              req.result.close();
              resolve(has);
            };
          }),
      ),
    )
    .toBe(true);

  // A newer version asks for an upgrade: the open tab lets it through instead of blocking it.
  const b = await ctx.newPage();
  await b.goto('/pkg/app.css'); // same origin, no app
  const outcome = await b.evaluate(
    () =>
      new Promise<string>((resolve) => {
        const req = indexedDB.open('sssync', 1000);
        req.onblocked = () => resolve('blocked');
        req.onerror = () => resolve('error');
        req.onsuccess = () => {
          req.result.close();
          resolve('upgraded');
        };
      }),
  );
  expect(outcome).toBe('upgraded');

  // The old tab goes on from memory.
  await addTodo(a, 'after the upgrade');
  await expect(a.getByTestId('sync-status')).toHaveText('live');
});

test('a queue saved before its tab knew who was signed in is not sent as whoever opens the app next', async ({ browser }) => {
  const ctx = await browser.newContext();
  const a = await ctx.newPage();
  // Welcomed (anonymously): this browser's storage is the anonymous identity's.
  const id = await openFreshList(a, true);
  await settled(a, true);
  // And its storage claimed for that identity (the welcome's first pass, which drops what other
  // identities left, has ended): what is planted below is found by the next tab, not by it.
  await expect
    .poll(() => a.evaluate(() => localStorage.getItem('sssync.who')))
    .not.toBeNull();
  // What a tab left that was never welcomed (a client-only app started offline by someone,
  // closed before it connected): nobody can tell whose it is.
  await a.evaluate(
    ({ list }) =>
      new Promise<void>((resolve, reject) => {
        const req = indexedDB.open('sssync');
        req.onerror = () => reject(req.error);
        req.onsuccess = () => {
          const db = req.result;
          const tx = db.transaction('queues', 'readwrite');
          const entry = {
            client_id: 'never-welcomed',
            epoch: null,
            events: [[1, 'add_todo', JSON.stringify({ id: 'unknown-1', list_id: list, title: 'whose is this' })]],
            beat: 0,
          };
          tx.objectStore('queues').put(JSON.stringify(entry), 'never-welcomed');
          tx.oncomplete = () => {
            db.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
    { list: id },
  );
  // The next tab adopts what gone tabs left: this queue is dropped, and the page says so.
  const b = await ctx.newPage();
  await b.goto(`/lists/${id}`);
  await waitReady(b, true);
  await expect(b.getByTestId('sync-notice')).toContainText('could not be sent');
  await expect.poll(() => keptEvents(b)).toBe(0);
  await settled(b, true);
  const html = await (await b.request.get(`/lists/${id}`)).text();
  expect(html).not.toContain('whose is this');
  await expect(titles(b)).toHaveCount(0);
});
