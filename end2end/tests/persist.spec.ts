// What survives the tab: writes made offline are kept in IndexedDB, adopted by the next tab
// and applied exactly once; and without any storage the app still works, from memory.
import { expect, test, type Page } from '@playwright/test';
import { addTodo, openFreshList, titles } from './helpers';

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
  await b.goto('/pkg/demo-app.css'); // same origin, no app
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
