import { expect, type Locator, type Page } from '@playwright/test';
import { randomUUID } from 'node:crypto';

/** Opens a list nobody has used (an unseen id is an empty list) and, with JavaScript, waits until
 *  the page has hydrated (the app sets `html.hydrated`). Returns the list's id. */
export async function openFreshList(page: Page, js: boolean, filter = ''): Promise<string> {
  const id = randomUUID();
  await page.goto(`/lists/${id}${filter}`);
  await waitReady(page, js);
  return id;
}

/** With JavaScript, waits for hydration; without, the server-rendered page is ready as loaded. */
export async function waitReady(page: Page, js: boolean): Promise<void> {
  if (js) await expect(page.locator('html.hydrated')).toHaveCount(1);
}

export const newTodo = (page: Page) => page.getByPlaceholder('What needs to be done?');
export const items = (page: Page) => page.getByTestId('todo-item');
export const titles = (page: Page) => page.getByTestId('todo-title');
export const count = (page: Page) => page.getByTestId('todo-count');
export const toggleAll = (page: Page) => page.getByRole('checkbox', { name: 'Mark all as complete' });

/** Types a todo and presses Enter; waits until it shows as the last item. */
export async function addTodo(page: Page, title: string): Promise<void> {
  const before = await items(page).count();
  await newTodo(page).fill(title);
  await newTodo(page).press('Enter');
  await expect(items(page)).toHaveCount(before + 1);
  await expect(titles(page).last()).toHaveText(title.trim());
}

export async function addTodos(page: Page, ...list: string[]): Promise<void> {
  for (const t of list) await addTodo(page, t);
}

/** The item whose title is exactly `title`. */
export function item(page: Page, title: string): Locator {
  return items(page).filter({ has: page.getByTestId('todo-title').getByText(title, { exact: true }) });
}

/** Clicks a control that TodoMVC shows only while the item is hovered (delete, edit link). */
export async function clickHoverControl(row: Locator, control: Locator): Promise<void> {
  await row.hover();
  await control.click();
}

/** With JavaScript, writes show before the server has them: wait until none is pending (the
 *  status indicator says just `live`) before looking at what the server renders. */
export async function settled(page: Page, js: boolean): Promise<void> {
  if (js) await expect(page.getByTestId('sync-status')).toHaveText('live');
}
