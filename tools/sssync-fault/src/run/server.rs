//! The scenario's server: a real process (`sssync-fault serve`), controlled on its standard
//! input, killed with SIGKILL, started again.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A running server process (`exe serve --db …`), killed when dropped.
pub struct Server {
    pub(super) child: Child,
    pub(super) stdin: ChildStdin,
    pub(super) out: Lines<BufReader<ChildStdout>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `exe serve --db db` (a SQLite file's path or a `postgres://` URL); waits until it
    /// listens.
    pub async fn start(exe: &Path, db: impl AsRef<std::ffi::OsStr>) -> Result<Server, String> {
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--busy-ms")
            .arg("40")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), out.next_line())
            .await
            .map_err(|_| "the server did not start within 20 s".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("the server exited before listening")?;
        let addr = line
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        Ok(Server {
            child,
            stdin,
            out,
            addr,
        })
    }

    /// Sends a command; waits for its `OK`.
    pub(super) async fn command(&mut self, cmd: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.out.next_line())
                .await
                .map_err(|_| format!("no answer to {cmd:?}"))?
                .map_err(|e| e.to_string())?
                .ok_or("the server exited")?;
            if line == "OK" {
                return Ok(());
            }
        }
    }

    /// Waits (at most `limit`) for the server to reach the armed fault point.
    pub(super) async fn reached(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.out.next_line()).await {
                Ok(Ok(Some(l))) if l.starts_with("AT ") => return true,
                Ok(Ok(Some(_))) => {}
                _ => return false,
            }
        }
    }

    /// The WebSocket URL of its sync endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}
