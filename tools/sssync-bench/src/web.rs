//! The rows of `perf` that measure the built web apps (`cargo leptos build --release` first):
//! the server render of the demo's list page with 100 todos against the same page in plain
//! Leptos (`todomvc-plain`, the todos passed in by server functions), and the demo's hydrate
//! bundle against that plain TodoMVC's, built with the same profile.

use crate::http::Http;
use crate::table::{Line, Size};
use sssync_core::server::Store;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// The todos of the measured page.
const TODOS: usize = 100;
/// Connections that request pages at once.
const CONNECTIONS: usize = 8;

/// Where the built apps are: the release binaries and the sites' `pkg` folders.
pub struct Built {
    demo_bin: PathBuf,
    demo_site: PathBuf,
    plain_bin: PathBuf,
    plain_site: PathBuf,
}

impl Built {
    /// The apps `cargo leptos build --release` made, or what is missing.
    pub fn find() -> Result<Built> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"));
        let built = Built {
            demo_bin: target.join("release/demo-app"),
            demo_site: target.join("site"),
            plain_bin: target.join("release/todomvc-plain"),
            // Its site root is set in the workspace's Cargo.toml (target/plain-site).
            plain_site: workspace().join("target/plain-site"),
        };
        for p in [
            &built.demo_bin,
            &built.plain_bin,
            &built.demo_site.join("pkg/app.wasm"),
            &built.plain_site.join("pkg/app.wasm"),
        ] {
            if !p.exists() {
                return Err(format!(
                    "{} is missing: build the apps first (cargo leptos build --release)",
                    p.display()
                )
                .into());
            }
        }
        Ok(built)
    }
}

fn workspace() -> PathBuf {
    // This crate is tools/sssync-bench.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A web app's server in a child process, killed when dropped.
struct Server {
    _process: tokio::process::Child,
    addr: String,
}

impl Server {
    async fn start(bin: &Path, site: &Path, env: &[(&str, String)]) -> Result<Server> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut command = tokio::process::Command::new(bin);
        command
            .env("LEPTOS_SITE_ROOT", site)
            .env("LEPTOS_SITE_ADDR", &addr)
            .env("LEPTOS_ENV", "PROD")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let process = command.spawn()?;
        // Up when it answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut http) = Http::connect(&addr).await
                && http.get("/").await.is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not answer within 30 s", bin.display()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Server {
            _process: process,
            addr,
        })
    }
}

/// Pages per second of `path` on `addr` for `secs`, over [`CONNECTIONS`] kept-alive
/// connections, each request with `headers` (header lines), and one page's bytes; each page
/// must hold [`TODOS`] items.
async fn pages_per_second(
    addr: &str,
    path: &str,
    headers: &'static str,
    secs: f64,
) -> Result<(f64, usize)> {
    let first = Http::connect(addr).await?.get_with(path, headers).await?;
    let items = count(&first, b"data-testid=\"todo-item\"");
    if items != TODOS {
        return Err(format!("{addr}{path} shows {items} todos, not {TODOS}").into());
    }
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let t = Instant::now();
    let counts = futures_util::future::try_join_all((0..CONNECTIONS).map(|_| async move {
        let mut http = Http::connect(addr).await?;
        let mut n = 0u64;
        while Instant::now() < until {
            http.get_with(path, headers).await?;
            n += 1;
        }
        Ok::<_, Error>(n)
    }))
    .await?;
    let pages: u64 = counts.iter().sum();
    Ok((pages as f64 / t.elapsed().as_secs_f64(), first.len()))
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// The server render of a list page with 100 todos: the demo (on a fresh SQLite file) against
/// the same page in plain Leptos, rendered for each request (`Cache-Control: no-cache`), then
/// as an anonymous visitor gets it, kept (the demo keeps its public pages).
pub async fn ssr(built: &Built, size: Size, dir: &Path) -> Result<[Line; 2]> {
    let secs = size.ssr_secs;
    let db = dir.join("ssr.db");
    let url = format!("sqlite://{}", db.display());
    let demo = Server::start(
        &built.demo_bin,
        &built.demo_site,
        &[("DATABASE_URL", url.clone())],
    )
    .await?;
    // The list's todos, written outside the engine (the engine seals and serves them).
    {
        let pool = sssync_core::server::SqliteStore::open(&url)
            .await?
            .pool()
            .clone();
        for i in 0..TODOS {
            sqlx::query(
                "INSERT INTO todos (id, list_id, title, completed, position) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(format!("todo-{i:03}"))
            .bind("bench")
            .bind(format!("a todo of reasonable length, number {i}"))
            .bind(i % 3 == 0)
            .bind(i as i64 + 1)
            .execute(&pool)
            .await?;
        }
        pool.close().await;
    }
    // Once the engine serves them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = Http::connect(&demo.addr).await?.get("/lists/bench").await?;
        if count(&page, b"data-testid=\"todo-item\"") == TODOS {
            break;
        }
        if Instant::now() > deadline {
            return Err("the demo did not show the list's 100 todos within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let render = "Cache-Control: no-cache\r\n";
    let (ours, our_bytes) = pages_per_second(&demo.addr, "/lists/bench", render, secs).await?;
    let (kept, _) = pages_per_second(&demo.addr, "/lists/bench", "", secs).await?;
    drop(demo);

    let plain = Server::start(
        &built.plain_bin,
        &built.plain_site,
        &[("TODOMVC_PLAIN_SEED", format!("bench:{TODOS}"))],
    )
    .await?;
    let (base, base_bytes) = pages_per_second(&plain.addr, "/lists/bench", "", secs).await?;
    drop(plain);
    let kept = Line {
        what: format!("kept page: the demo page with {TODOS} todos, anonymous"),
        target: ">= 10x plain Leptos",
        sssync: format!("{kept:.0} pages/s (a kept render, current)"),
        baseline: format!("{base:.0} pages/s (plain Leptos, rendered for each request)"),
        ratio: kept / base,
        met: Some(kept >= 10.0 * base),
    };
    let render = Line {
        what: format!("SSR of the demo page with {TODOS} todos"),
        target: ">= 3,000 pages/s",
        sssync: format!(
            "{ours:.0} pages/s ({:.1} KB a page)",
            our_bytes as f64 / 1024.0
        ),
        baseline: format!(
            "{base:.0} pages/s ({:.1} KB a page: the same page in plain Leptos, the todos passed \
             in by a server function)",
            base_bytes as f64 / 1024.0
        ),
        ratio: ours / base,
        met: Some(ours >= 3000.0),
    };
    Ok([render, kept])
}

/// Brotli (quality 11) bytes of a file.
fn brotli(path: &Path) -> Result<usize> {
    let data = std::fs::read(path)?;
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin: 22,
        size_hint: data.len(),
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params)?;
    Ok(out.len())
}

/// The bundle budget: what the demo's hydrate bundle may weigh over the plain Leptos TodoMVC's
/// (brotli, KB). A `--check` run (CI's) fails beyond it, so that what is taken off stays off;
/// lower it with every diet (docs/performance.md).
pub const BUNDLE_BUDGET_OVER_PLAIN_KB: f64 = 183.0;

/// The hydrate bundle (wasm + JS, brotli): the demo's against the plain Leptos TodoMVC's; and
/// the demo's KB over the plain one's (for the budget).
pub fn bundle(built: &Built) -> Result<(Line, f64)> {
    let size = |site: &Path, name: &str| -> Result<usize> {
        Ok(brotli(&site.join(format!("pkg/{name}.wasm")))?
            + brotli(&site.join(format!("pkg/{name}.js")))?)
    };
    let ours = size(&built.demo_site, "app")?;
    let base = size(&built.plain_site, "app")?;
    let kb = |n: usize| n as f64 / 1024.0;
    let line = Line {
        what: "hydrate bundle (demo, release, brotli, wasm + js)".into(),
        target: "<= 120 KB, and <= 40 KB over plain Leptos",
        sssync: format!(
            "{:.1} KB ({:+.1} KB over plain)",
            kb(ours),
            kb(ours) - kb(base)
        ),
        baseline: format!(
            "{:.1} KB (a plain Leptos TodoMVC, the same profile)",
            kb(base)
        ),
        ratio: base as f64 / ours as f64,
        met: Some(ours <= 120 * 1024 && ours <= base + 40 * 1024),
    };
    Ok((line, kb(ours) - kb(base)))
}
