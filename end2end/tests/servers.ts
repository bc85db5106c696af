// Server processes of the tests' own (the release build scripts/test.sh made), on ports
// and databases of their own, for tests that kill, restart or multiply servers.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export const bin = process.env.E2E_SERVER_BIN;
export const siteRoot = process.env.E2E_SITE_ROOT;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A demo server process of a test's own, on 127.0.0.1, on the database `databaseUrl` (`db`:
 *  the SQLite file, when it is one). */
export class DemoServer {
  private proc?: ChildProcess;
  readonly url: string;

  constructor(
    readonly port: number,
    readonly databaseUrl: string,
    readonly db = '',
  ) {
    this.url = `http://127.0.0.1:${port}`;
  }

  async start(): Promise<void> {
    this.proc = spawn(bin!, [], {
      env: {
        ...process.env,
        LEPTOS_SITE_ADDR: `127.0.0.1:${this.port}`,
        LEPTOS_SITE_ROOT: siteRoot!,
        LEPTOS_ENV: 'PROD',
        DATABASE_URL: this.databaseUrl,
        RUST_LOG: 'warn',
      },
      stdio: 'ignore',
    });
    // Until it answers (bounded).
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        if ((await fetch(`${this.url}/lists/health`)).ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error('the demo server did not start within 15 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGKILL: no shutdown, no flush; whatever was not committed is gone. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = once(p, 'exit');
    p.kill('SIGKILL');
    await exited;
  }

  /** The database's files (the SQLite file, its WAL and shared memory). */
  files(): string[] {
    return [this.db, `${this.db}-wal`, `${this.db}-shm`];
  }
}


/** Another app's release server (the chat, the starter: a binary beside the demo's, its site
 *  where its Cargo.toml says, `target/<app>-site` in the clone), on 127.0.0.1 and a fresh SQLite
 *  database; answered once its page answers (bounded). */
export async function startApp(binary: string, site: string): Promise<{ url: string; proc: ChildProcess }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const db = join(mkdtempSync(join(tmpdir(), `sssync-${binary}-`)), 'app.db');
  const proc = spawn(join(dirname(bin!), binary), [], {
    env: {
      ...process.env,
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_SITE_ROOT: join(process.cwd(), '..', 'target', site),
      LEPTOS_ENV: 'PROD',
      DATABASE_URL: `sqlite://${db}`,
      RUST_LOG: 'warn',
    },
    stdio: 'ignore',
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if ((await fetch(url)).ok) return { url, proc };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${binary} did not start within 15 s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
