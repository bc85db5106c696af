// The client-only build (Trunk, feature `csr`): the same app rendered in the browser, syncing
// with the same server. scripts/test.sh serves it (`trunk serve`, proxying the sync endpoint to
// the server under test) and sets E2E_CSR_URL.
import { expect, test } from '@playwright/test';
import { randomUUID } from 'node:crypto';
import { addTodo, titles, waitReady } from './helpers';

const csr = process.env.E2E_CSR_URL;

test.describe('client-only build (Trunk)', () => {
  test.skip(!csr, 'E2E_CSR_URL is not set (scripts/test.sh serves the CSR build and sets it)');

  test('renders in the browser and syncs both ways with the server-rendered app', async ({ browser }) => {
    const id = randomUUID();
    const client = await (await browser.newContext()).newPage();
    await client.goto(`${csr}/lists/${id}`);
    await waitReady(client, true);
    await expect(client.getByPlaceholder('What needs to be done?')).toBeVisible();
    await expect(client.getByTestId('sync-status')).toHaveText('live');

    const ssr = await (await browser.newContext()).newPage();
    await ssr.goto(`/lists/${id}`);
    await waitReady(ssr, true);

    await addTodo(client, 'from the client-only app');
    await expect(titles(ssr)).toHaveText(['from the client-only app'], { timeout: 2_000 });
    await addTodo(ssr, 'from the server-rendered app');
    await expect(titles(client)).toHaveText(
      ['from the client-only app', 'from the server-rendered app'],
      { timeout: 2_000 },
    );
  });
});
