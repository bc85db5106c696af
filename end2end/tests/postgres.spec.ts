// The demo on PostgreSQL with two server processes on one database: a browser on each sees the
// other's writes within a second, and a write made with psql reaches both. scripts/test.sh sets
// E2E_PG_URL (an administrator's URL: the test makes a database of its own) when PostgreSQL
// answers.
import { expect, test } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { addTodo, items, titles, waitReady } from './helpers';
import { bin, DemoServer, freePort, siteRoot } from './servers';

const admin = process.env.E2E_PG_URL;

function psql(url: string, sql: string): void {
  execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], { stdio: 'pipe' });
}

/** `admin` with another database name. */
function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

test.skip(!admin || !bin || !siteRoot, 'E2E_PG_URL, E2E_SERVER_BIN and E2E_SITE_ROOT are set by scripts/test.sh');

test('two server processes on one PostgreSQL database: each browser sees the other\'s writes, and psql\'s, within a second', async ({
  browser,
}) => {
  const name = `sssync_e2e_${randomUUID().replaceAll('-', '')}`;
  psql(admin!, `CREATE DATABASE ${name}`);
  const url = withDatabase(admin!, name);
  const a = new DemoServer(await freePort(), url);
  const b = new DemoServer(await freePort(), url);
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  try {
    await a.start();
    await b.start();
    const list = randomUUID();
    const pageA = await ctxA.newPage();
    const pageB = await ctxB.newPage();
    await pageA.goto(`${a.url}/lists/${list}`);
    await pageB.goto(`${b.url}/lists/${list}`);
    for (const p of [pageA, pageB]) {
      await waitReady(p, true);
      await expect(p.getByTestId('sync-status')).toHaveText('live');
    }
    await addTodo(pageA, 'written on instance A');
    await expect(titles(pageB)).toHaveText(['written on instance A'], { timeout: 1_000 });
    await addTodo(pageB, 'written on instance B');
    await expect(titles(pageA)).toHaveText(['written on instance A', 'written on instance B'], {
      timeout: 1_000,
    });
    await pageB.getByRole('checkbox', { name: 'Toggle Todo' }).first().check();
    await expect(items(pageA).first()).toHaveClass('completed', { timeout: 1_000 });
    // An administrator's write, outside any server.
    psql(
      url,
      `INSERT INTO todos (id, list_id, title, completed, position) VALUES ('psql-1', '${list}', 'written with psql', FALSE, 100)`,
    );
    for (const p of [pageA, pageB]) {
      await expect(titles(p)).toHaveText(
        ['written on instance A', 'written on instance B', 'written with psql'],
        { timeout: 1_000 },
      );
    }
  } finally {
    await ctxA.close();
    await ctxB.close();
    await a.kill();
    await b.kill();
    psql(admin!, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  }
});
