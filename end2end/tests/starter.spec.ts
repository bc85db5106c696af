// The starter (examples/starter/, what `scripts/new-app.sh` copies out): served by its own
// release build on a database of its own, it renders its list on the server, takes a todo, and
// shows it at once in every open browser.
import { expect, test, type Page } from '@playwright/test';
import { type ChildProcess } from 'node:child_process';
import { bin, startApp } from './servers';

let server: ChildProcess | undefined;
let url = '';

test.beforeAll(async () => {
  test.skip(!bin, 'E2E_SERVER_BIN names the release builds');
  ({ url, proc: server } = await startApp('sssync-starter', 'starter-site'));
});

test.afterAll(() => {
  server?.kill('SIGKILL');
});

const todos = (page: Page) => page.getByRole('list', { name: 'Todos' }).getByRole('listitem');

async function live(page: Page): Promise<void> {
  const socket = page.waitForEvent('websocket'); // hydrated: the tab's sync runtime opened it
  await page.goto(url);
  await socket;
}

test('the starter renders its list, takes a todo, and shows it live in another browser', async ({ browser }) => {
  const [a, b] = [await browser.newPage(), await browser.newPage()];
  const errors: string[] = [];
  a.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await live(a);
  await live(b);
  await expect(todos(a)).toHaveCount(0);
  await a.getByLabel('New todo').fill('  buy milk ');
  await a.getByRole('button', { name: 'Add' }).click();
  await expect(todos(a)).toHaveText(['buy milk']);
  await expect(a.getByLabel('New todo')).toHaveValue(''); // emptied as it is sent
  await expect(todos(b)).toHaveText(['buy milk']);
  // Refused: nothing to add, and the page says why.
  await a.getByRole('button', { name: 'Add' }).click();
  await expect(a.getByRole('alert')).toHaveText('Write something first.');
  await expect(todos(a)).toHaveCount(1);
  // The server renders the list into the page's HTML.
  expect(await (await a.request.get(url)).text()).toContain('buy milk');
  expect(errors).toEqual([]);
});
