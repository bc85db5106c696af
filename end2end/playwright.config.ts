import { defineConfig } from '@playwright/test';

// The server is started by scripts/test.sh (the release build on a fresh SQLite database) and
// its address passed in E2E_BASE_URL. Playwright cannot download browsers here: Debian's
// Chromium is used (scripts/setup.sh installs it).
const baseURL = process.env.E2E_BASE_URL ?? 'http://127.0.0.1:3000';

export default defineConfig({
  testDir: './tests',
  timeout: 30_000,
  expect: { timeout: 5_000 },
  fullyParallel: true,
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: 'list',
  use: {
    baseURL,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
  },
  outputDir: process.env.E2E_OUTPUT_DIR ?? 'test-results',
});
