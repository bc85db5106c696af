// The TodoMVC behaviour of the demo, in Chromium, once with JavaScript (hydrated, server actions)
// and once without (plain forms posting to the server functions). Each test uses a fresh list.
import { expect, test } from '@playwright/test';
import {
  addTodo,
  addTodos,
  clickHoverControl,
  count,
  item,
  items,
  newTodo,
  openFreshList,
  settled,
  titles,
  toggleAll,
  waitReady,
} from './helpers';

for (const js of [true, false]) {
  test.describe(js ? 'with JavaScript' : 'without JavaScript', () => {
    test.use({ javaScriptEnabled: js });

    test('a new list is empty: no main section, no footer', async ({ page }) => {
      await openFreshList(page, js);
      // The run without JavaScript really is one: the page never hydrates.
      await expect(page.locator('html.hydrated')).toHaveCount(js ? 1 : 0);
      await expect(newTodo(page)).toBeVisible();
      await expect(items(page)).toHaveCount(0);
      await expect(page.locator('.main')).toHaveCount(0);
      await expect(page.locator('.footer')).toHaveCount(0);
    });

    test('adding: Enter adds at the bottom, text is trimmed, empty is ignored, input clears', async ({ page }) => {
      await openFreshList(page, js);
      await addTodo(page, 'buy milk');
      await expect(newTodo(page)).toHaveValue('');
      await addTodo(page, '   walk the dog  ');
      await expect(titles(page)).toHaveText(['buy milk', 'walk the dog']);

      await newTodo(page).fill('    ');
      // Without JavaScript the form posts and the page loads again: wait for that new page.
      const reloaded = js ? null : page.waitForEvent('load');
      await newTodo(page).press('Enter');
      await reloaded;
      await expect(items(page)).toHaveCount(2);
      await expect(titles(page)).toHaveText(['buy milk', 'walk the dog']);
    });

    test('markup is TodoMVC’s: li text is the title, classes are exact', async ({ page }) => {
      await openFreshList(page, js);
      await addTodos(page, 'one', 'two');
      await expect(items(page)).toHaveText(['one', 'two']);
      await expect(items(page).nth(0)).toHaveAttribute('class', '');
      await item(page, 'one').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(item(page, 'one')).toHaveAttribute('class', 'completed');
      await expect(item(page, 'two')).toHaveAttribute('class', '');
      await expect(page.getByRole('link', { name: 'All' })).toHaveAttribute('class', 'selected');
      // The text of the li is exactly the title: no text from its controls.
      expect(await item(page, 'one').evaluate((li) => li.textContent)).toBe('one');
    });

    test('the counter says how many are left, with its plural', async ({ page }) => {
      await openFreshList(page, js);
      await addTodo(page, 'a');
      await expect(count(page)).toHaveText('1 item left');
      await addTodo(page, 'b');
      await expect(count(page)).toHaveText('2 items left');
      await item(page, 'a').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(count(page)).toHaveText('1 item left');
      await item(page, 'b').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(count(page)).toHaveText('0 items left');
    });

    test('toggling marks a todo completed and back', async ({ page }) => {
      await openFreshList(page, js);
      await addTodos(page, 'first', 'second');
      const toggle = item(page, 'first').getByRole('checkbox', { name: 'Toggle Todo' });
      await toggle.click();
      await expect(item(page, 'first')).toHaveClass('completed');
      await expect(toggle).toBeChecked();
      await expect(item(page, 'second').getByRole('checkbox', { name: 'Toggle Todo' })).not.toBeChecked();
      await toggle.click();
      await expect(item(page, 'first')).toHaveAttribute('class', '');
      await expect(toggle).not.toBeChecked();
    });

    test('toggle all completes every todo, then clears them all; it follows single toggles', async ({ page }) => {
      await openFreshList(page, js);
      await addTodos(page, 'a', 'b', 'c');
      await expect(toggleAll(page)).not.toBeChecked();
      await toggleAll(page).click();
      for (const t of ['a', 'b', 'c']) await expect(item(page, t)).toHaveClass('completed');
      await expect(toggleAll(page)).toBeChecked();
      await expect(count(page)).toHaveText('0 items left');

      await toggleAll(page).click();
      for (const t of ['a', 'b', 'c']) await expect(item(page, t)).toHaveAttribute('class', '');
      await expect(toggleAll(page)).not.toBeChecked();

      for (const t of ['a', 'b', 'c']) {
        await item(page, t).getByRole('checkbox', { name: 'Toggle Todo' }).click();
        await expect(item(page, t)).toHaveClass('completed');
      }
      await expect(toggleAll(page)).toBeChecked();
      await item(page, 'b').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(toggleAll(page)).not.toBeChecked();
    });

    test('delete removes the todo', async ({ page }) => {
      await openFreshList(page, js);
      await addTodos(page, 'keep', 'drop', 'also keep');
      const row = item(page, 'drop');
      await clickHoverControl(row, row.getByRole('button', { name: 'Delete' }));
      await expect(titles(page)).toHaveText(['keep', 'also keep']);
      await expect(count(page)).toHaveText('2 items left');
    });

    test('clear completed removes completed todos and hides when none is completed', async ({ page }) => {
      await openFreshList(page, js);
      await addTodos(page, 'a', 'b', 'c');
      const clear = page.getByRole('button', { name: 'Clear completed' });
      await expect(clear).toHaveCount(0);
      await item(page, 'a').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(item(page, 'a')).toHaveClass('completed');
      await item(page, 'c').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(item(page, 'c')).toHaveClass('completed');
      await expect(clear).toBeVisible();
      await clear.click();
      await expect(titles(page)).toHaveText(['b']);
      await expect(clear).toHaveCount(0);
    });

    test('filters have their own URLs, mark the current one and the back button works', async ({ page }) => {
      const id = await openFreshList(page, js);
      await addTodos(page, 'active one', 'done one');
      await item(page, 'done one').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(item(page, 'done one')).toHaveClass('completed');

      await page.getByRole('link', { name: 'Active' }).click();
      await expect(page).toHaveURL(`/lists/${id}/active`);
      await expect(titles(page)).toHaveText(['active one']);
      await expect(page.getByRole('link', { name: 'Active' })).toHaveAttribute('class', 'selected');
      await expect(page.getByRole('link', { name: 'All' })).not.toHaveAttribute('class', 'selected');

      await page.getByRole('link', { name: 'Completed' }).click();
      await expect(page).toHaveURL(`/lists/${id}/completed`);
      await expect(titles(page)).toHaveText(['done one']);
      await expect(page.getByRole('link', { name: 'Completed' })).toHaveAttribute('class', 'selected');
      // The counter counts the whole list, whatever the filter.
      await expect(count(page)).toHaveText('1 item left');

      await page.goBack();
      await expect(page).toHaveURL(`/lists/${id}/active`);
      await expect(titles(page)).toHaveText(['active one']);
      await page.goBack();
      await expect(page).toHaveURL(`/lists/${id}`);
      await expect(titles(page)).toHaveText(['active one', 'done one']);
      await expect(page.getByRole('link', { name: 'All' })).toHaveAttribute('class', 'selected');

      // A write under a filter stays under that filter.
      await settled(page, js);
      await page.goto(`/lists/${id}/active`);
      await waitReady(page, js);
      await addTodo(page, 'another');
      await expect(page).toHaveURL(`/lists/${id}/active`);
      await expect(titles(page)).toHaveText(['active one', 'another']);
    });

    test('lists are separate, each at its own URL, and / opens the default list', async ({ page }) => {
      const first = await openFreshList(page, js);
      await addTodo(page, 'only in the first list');
      await settled(page, js);
      const second = await openFreshList(page, js);
      expect(second).not.toBe(first);
      await expect(items(page)).toHaveCount(0);
      await addTodo(page, 'only in the second list');

      await settled(page, js);
      await page.goto(`/lists/${first}`);
      await waitReady(page, js);
      await expect(titles(page)).toHaveText(['only in the first list']);

      const unique = `on the default list ${Date.now()} ${Math.random()}`;
      await page.goto('/');
      await waitReady(page, js);
      await addTodo(page, unique);
      await expect(page).toHaveURL('/');
      // The footer (present once the list has a todo) links to the default list's own URL.
      await expect(page.getByRole('link', { name: 'All' })).toHaveAttribute('href', '/lists/default');
      await settled(page, js);
      await page.goto('/lists/default');
      await waitReady(page, js);
      await expect(item(page, unique)).toHaveCount(1);
      // Leave the shared default list as it was.
      const row = item(page, unique);
      await clickHoverControl(row, row.getByRole('button', { name: 'Delete' }));
      await expect(item(page, unique)).toHaveCount(0);
    });

    test('the server renders the todos into the HTML and they survive a reload', async ({ page }) => {
      const id = await openFreshList(page, js);
      await addTodos(page, 'rendered on the server', 'second');
      await item(page, 'second').getByRole('checkbox', { name: 'Toggle Todo' }).click();
      await expect(item(page, 'second')).toHaveClass('completed');
      await settled(page, js);
      const html = await (await page.request.get(`/lists/${id}`)).text();
      expect(html).toContain('rendered on the server');
      expect(html).toContain('class="completed"');
      await page.reload();
      await waitReady(page, js);
      await expect(titles(page)).toHaveText(['rendered on the server', 'second']);
      await expect(item(page, 'second')).toHaveClass('completed');
    });

    test('the server rejects a title over 200 characters and says why', async ({ page }) => {
      await openFreshList(page, js);
      await addTodo(page, 'short and fine');
      const long = 'x'.repeat(201);
      await newTodo(page).fill(long);
      await newTodo(page).press('Enter');
      await expect(page.getByRole('alert')).toContainText('at most 200 characters');
      await expect(titles(page)).toHaveText(['short and fine']);
      // Exactly 200 is fine.
      await addTodo(page, 'y'.repeat(200));
      await expect(items(page)).toHaveCount(2);
      await expect(page.getByRole('alert')).toHaveCount(0);
      // The message does not come back on the next visit.
      await settled(page, js);
      await page.reload();
      await waitReady(page, js);
      await expect(page.getByRole('alert')).toHaveCount(0);
    });
  });
}

test.describe('editing with JavaScript', () => {
  const edit = (page: import('@playwright/test').Page) => page.getByRole('textbox', { name: 'Edit' });

  test('double-click edits; Enter saves the trimmed text', async ({ page }) => {
    await openFreshList(page, true);
    await addTodos(page, 'first', 'second');
    await item(page, 'second').getByTestId('todo-title').dblclick();
    await expect(items(page).nth(1)).toHaveAttribute('class', 'editing');
    await expect(edit(page)).toBeFocused();
    await expect(edit(page)).toHaveValue('second');
    // Other controls of the item are hidden while editing.
    await expect(items(page).nth(1).getByRole('checkbox', { name: 'Toggle Todo' })).toBeHidden();
    await edit(page).fill('  second, edited  ');
    await edit(page).press('Enter');
    await expect(titles(page)).toHaveText(['first', 'second, edited']);
    await expect(edit(page)).toHaveCount(0);
    await expect(items(page).nth(1)).toHaveAttribute('class', '');
  });

  test('leaving the edit box saves', async ({ page }) => {
    await openFreshList(page, true);
    await addTodos(page, 'first', 'second');
    await item(page, 'first').getByTestId('todo-title').dblclick();
    await edit(page).fill('first, blurred');
    await newTodo(page).focus();
    await expect(titles(page)).toHaveText(['first, blurred', 'second']);
    await settled(page, true);
    await page.reload();
    await expect(titles(page)).toHaveText(['first, blurred', 'second']);
  });

  test('Escape cancels the edit', async ({ page }) => {
    await openFreshList(page, true);
    await addTodos(page, 'unchanged');
    await item(page, 'unchanged').getByTestId('todo-title').dblclick();
    await edit(page).fill('should not be saved');
    await edit(page).press('Escape');
    await expect(edit(page)).toHaveCount(0);
    await expect(titles(page)).toHaveText(['unchanged']);
    await settled(page, true);
    await page.reload();
    await expect(titles(page)).toHaveText(['unchanged']);
  });

  test('saving an empty text deletes the todo', async ({ page }) => {
    await openFreshList(page, true);
    await addTodos(page, 'keep', 'empty me');
    await item(page, 'empty me').getByTestId('todo-title').dblclick();
    await edit(page).fill('   ');
    await edit(page).press('Enter');
    await expect(titles(page)).toHaveText(['keep']);
  });
});

test.describe('editing without JavaScript', () => {
  test.use({ javaScriptEnabled: false });
  const edit = (page: import('@playwright/test').Page) => page.getByRole('textbox', { name: 'Edit' });

  test('the edit link opens the edit box; Enter saves; empty deletes', async ({ page }) => {
    const id = await openFreshList(page, false);
    await addTodos(page, 'first', 'second');
    const row = item(page, 'second');
    await clickHoverControl(row, row.getByRole('link', { name: 'Edit todo' }));
    await expect(items(page).nth(1)).toHaveAttribute('class', 'editing');
    await expect(edit(page)).toHaveValue('second');
    await edit(page).fill('  second, edited ');
    await edit(page).press('Enter');
    await expect(titles(page)).toHaveText(['first', 'second, edited']);
    await expect(page).toHaveURL(`/lists/${id}`);
    await expect(edit(page)).toHaveCount(0);

    const first = item(page, 'first');
    await clickHoverControl(first, first.getByRole('link', { name: 'Edit todo' }));
    await edit(page).fill('');
    await edit(page).press('Enter');
    await expect(titles(page)).toHaveText(['second, edited']);
  });
});

test('after hydration each control exists once, as a TodoMVC suite expects', async ({ page }) => {
  await openFreshList(page, true);
  await addTodos(page, 'one', 'two');
  // The no-JavaScript stand-ins (submit buttons with the checkbox role, edit links) are gone.
  await expect(page.getByLabel('Mark all as complete')).toHaveCount(1);
  await expect(page.getByRole('checkbox', { name: 'Toggle Todo' })).toHaveCount(2);
  await expect(page.getByRole('link', { name: 'Edit todo' })).toHaveCount(0);
  await page.getByLabel('Mark all as complete').check();
  await expect(count(page)).toHaveText('0 items left');
  await settled(page, true);
});

test('a plain form\'s rejection shows after its redirect, and not on the list navigated to next', async ({ page }) => {
  const other = await openFreshList(page, true);
  const id = await openFreshList(page, true);
  // The post a browser without JavaScript makes, and the redirect Leptos answers it with.
  const r = await page.request.post('/api/add_todo', {
    form: { list_id: id, title: 'x'.repeat(201), sssync_key: `k-${id}` },
    headers: { Accept: 'text/html', Referer: new URL(`/lists/${id}`, page.url()).href },
    maxRedirects: 0,
  });
  expect(r.status()).toBe(302);
  await page.goto(r.headers()['location']);
  await waitReady(page, true);
  await expect(page.getByRole('alert')).toContainText('at most 200 characters');
  // A client-side navigation leaves the redirect's URL, and its error with it.
  await page.locator(`a.recent-list[href="/lists/${other}"]`).click();
  await expect(page).toHaveURL(new RegExp(`/lists/${other}$`));
  await expect(newTodo(page)).toBeVisible();
  await expect(page.getByRole('alert')).toHaveCount(0);
});

test('a list loads, hydrates and takes a write with no console error and no failed request', async ({ page }) => {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
  });
  await openFreshList(page, true);
  await addTodo(page, 'milk');
  await page.reload();
  await waitReady(page, true);
  await expect(titles(page)).toHaveText(['milk']);
  expect(errors).toEqual([]);
});
