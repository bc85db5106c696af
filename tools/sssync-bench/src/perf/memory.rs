//! Memory: idle connections, against a plain axum WebSocket server.

use super::child::Child;
use super::clients::{WAIT, list};
use super::{Error, Result};
use crate::table::{Line, Size};
use sssync_core::client::native::NativeClient;
use sssync_fault::app::Items;

/// Idle connections (each subscribed to a small query of its own) on an sssync server,
/// against idle connections on a plain axum WebSocket endpoint: server memory per connection.
pub(super) async fn idle_memory(url: &str, size: Size) -> Result<Line> {
    let n = size.idle;
    // sssync: a hello, a subscription, then nothing.
    let server = Child::start(url).await?;
    let warm = NativeClient::connect(server.ws(), "warm");
    warm.subscribe::<Items>(&list("warm"));
    warm.wait_for(WAIT, |s| s.rows::<Items>(&list("warm")).is_some())
        .await?;
    let before = server.rss()?;
    // One after the other, as the baseline's: the steady state of idle connections, not the
    // peak of a storm of handshakes (freed memory stays in the allocator's arenas).
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let l = list(&format!("idle-{i}"));
        let c = NativeClient::connect(server.ws(), format!("idle-{i}"));
        c.subscribe::<Items>(&l);
        c.wait_for(WAIT, |s| s.rows::<Items>(&l).is_some()).await?;
        clients.push(c);
    }
    let ours = server.rss()?.saturating_sub(before) / n as u64;
    drop(clients);
    drop(server);

    // Plain: the same number of WebSocket connections to an endpoint that echoes, with the
    // same read buffer (the floor of a WebSocket connection), then with axum's defaults.
    let plain = plain_sockets(url, "/plain/ws", n).await?;
    let default = plain_sockets(url, "/plain-default/ws", n).await?;
    Ok(Line {
        what: format!("idle connection memory ({n} connections)"),
        target: "<= 20 KB per connection",
        sssync: format!("{:.1} KB", ours as f64 / 1024.0),
        baseline: format!(
            "{:.1} KB (a plain axum WebSocket, the same 4 KiB read buffer; {:.1} KB with axum's defaults)",
            plain as f64 / 1024.0,
            default as f64 / 1024.0
        ),
        ratio: plain.max(1) as f64 / ours.max(1) as f64,
        met: Some(ours <= 20 * 1024),
    })
}

/// Server memory per connection of `n` WebSockets to the plain endpoint `path` of a fresh
/// server, each having had one message echoed (so its server task has read).
pub(super) async fn plain_sockets(url: &str, path: &str, n: usize) -> Result<u64> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Child::start(url).await?;
    let connect = || async {
        let ws = format!("ws://{}{path}", server.addr);
        let (mut s, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(ws))
            .await
            .map_err(|_| "connecting timed out")??;
        s.send(Message::text("hello")).await?;
        match tokio::time::timeout(WAIT, s.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => Ok::<_, Error>(s),
            _ => Err("no echo".into()),
        }
    };
    let warm = connect().await?;
    let before = server.rss()?;
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(connect().await?);
    }
    let per = server.rss()?.saturating_sub(before) / n as u64;
    drop((warm, sockets));
    Ok(per)
}
