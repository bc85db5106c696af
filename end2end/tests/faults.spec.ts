// The server under faults, seen from a tab: the server process killed with SIGKILL while the tab
// has writes pending, and the database restored from an earlier copy. Each test runs its own
// demo server process (the release build scripts/test.sh made), on its own port and database,
// so that it can kill and restart it.
import { expect, test, type Page } from '@playwright/test';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addTodo, newTodo, openFreshList, settled, titles } from './helpers';
import { bin, DemoServer, freePort, siteRoot } from './servers';

async function demoServer(): Promise<{ server: DemoServer; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'sssync-e2e-faults-'));
  const server = new DemoServer(await freePort(), `sqlite://${join(dir, 'demo.db')}`, join(dir, 'demo.db'));
  await server.start();
  return { server, dir };
}

/** How many times the server's own rendering of the list holds `title`. */
async function timesOnServer(page: Page, server: DemoServer, id: string, title: string) {
  const html = await (await page.request.get(`${server.url}/lists/${id}`)).text();
  return html.split(`>${title}</label>`).length - 1;
}

test.skip(!bin || !siteRoot, 'E2E_SERVER_BIN and E2E_SITE_ROOT name the built demo (scripts/test.sh sets them)');

test('writes pending while the server process is killed (SIGKILL) apply exactly once after it restarts', async ({
  browser,
}) => {
  const { server, dir } = await demoServer();
  const ctx = await browser.newContext({ baseURL: server.url });
  const page = await ctx.newPage();
  try {
    const id = await openFreshList(page, true);
    const status = page.getByTestId('sync-status');
    await expect(status).toHaveText('live');
    await addTodo(page, 'before the crash');
    await settled(page, true);
    // A write in flight when the process dies: committed or not, it must end up there once.
    await newTodo(page).fill('racing the crash');
    await newTodo(page).press('Enter');
    await server.kill();
    await expect(status).toContainText('offline');
    await addTodo(page, 'while the server is down');
    await expect(titles(page)).toHaveText(['before the crash', 'racing the crash', 'while the server is down']);
    await server.start();
    await expect(status).toHaveText('live', { timeout: 15_000 });
    await expect(titles(page)).toHaveText(['before the crash', 'racing the crash', 'while the server is down']);
    for (const t of ['before the crash', 'racing the crash', 'while the server is down']) {
      expect(await timesOnServer(page, server, id, t), t).toBe(1);
    }
  } finally {
    await ctx.close();
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('after the database is restored from an earlier copy, the tab resets, resends its pending write once, says so, and does not loop', async ({
  browser,
}) => {
  const { server, dir } = await demoServer();
  const ctx = await browser.newContext({ baseURL: server.url });
  const page = await ctx.newPage();
  let sockets = 0;
  let frames = 0;
  page.on('websocket', (ws) => {
    sockets += 1;
    ws.on('framereceived', () => {
      frames += 1;
    });
  });
  try {
    const id = await openFreshList(page, true);
    const status = page.getByTestId('sync-status');
    await addTodo(page, 'kept by the backup');
    await settled(page, true);
    // The backup: a copy of the database's files while the server is stopped.
    await server.kill();
    const backup = join(dir, 'backup');
    server.files().forEach((f, i) => {
      if (existsSync(f)) copyFileSync(f, `${backup}-${i}`);
    });
    await server.start();
    await expect(status).toHaveText('live', { timeout: 15_000 });
    await addTodo(page, 'lost with the restore');
    await settled(page, true);
    // The operator restores the copy; meanwhile the tab writes.
    await server.kill();
    await expect(status).toContainText('offline');
    await addTodo(page, 'written during the restore');
    server.files().forEach((f, i) => {
      rmSync(f, { force: true });
      if (existsSync(`${backup}-${i}`)) copyFileSync(`${backup}-${i}`, f);
    });
    await server.start();
    // Counted from when the server answers again: the tab's attempts while it was down (how
    // many depends on how long it took to start) are its backoff, not a loop.
    const [socketsBefore, framesBefore] = [sockets, frames];
    // The tab takes the restored history: the write made after the copy is gone (the restore
    // threw it away), the pending one is applied once.
    await expect(titles(page)).toHaveText(['kept by the backup', 'written during the restore'], {
      timeout: 15_000,
    });
    await expect(status).toHaveText('live');
    await expect(page.getByTestId('sync-notice')).toContainText('restored from an earlier copy');
    expect(await timesOnServer(page, server, id, 'written during the restore')).toBe(1);
    expect(await timesOnServer(page, server, id, 'lost with the restore')).toBe(0);
    // No reconnect loop: a few connections and frames, not an endless stream of them.
    expect(sockets - socketsBefore).toBeLessThanOrEqual(3);
    expect(frames - framesBefore).toBeLessThanOrEqual(30);
  } finally {
    await ctx.close();
    await server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});
