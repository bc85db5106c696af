//! A WebSocket proxy on 127.0.0.1 between the clients and the server, that damages the traffic
//! on command: frames dropped, duplicated, reordered, delayed, cut short, and connections cut.
//! Each connection draws its faults from its own seeded generator.
//!
//! What it does to each direction follows what can happen to a real one:
//! - client to server: any fault (a client's retransmissions duplicate and reorder events; a
//!   frame can be lost or cut short);
//! - server to client: duplicates, delays, frames cut short, connections cut (a frame is only
//!   ever lost together with its connection, as over TCP; and never reordered, which the
//!   protocol's ordering relies on, as TCP guarantees).

use crate::plan::Rng;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// The proxy: where clients connect, where it forwards to, and how hard it damages.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    rate: Arc<AtomicU32>,
    /// Faults done so far.
    pub faults: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone, Copy, Debug)]
enum Dir {
    ToServer,
    ToClient,
}

impl Proxy {
    /// Starts a proxy to the server at `upstream`; `seed` seeds every connection's faults.
    pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(upstream));
        let rate = Arc::new(AtomicU32::new(0));
        let faults = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (upstream, rate, faults) = (upstream.clone(), rate.clone(), faults.clone());
            async move {
                let mut n: u64 = 0;
                while let Ok((tcp, _)) = listener.accept().await {
                    n += 1;
                    let to = *upstream.lock().unwrap_or_else(|e| e.into_inner());
                    let rng = Rng::new(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    tokio::spawn(connection(tcp, to, rng, rate.clone(), faults.clone()));
                }
            }
        });
        Ok(Proxy {
            addr,
            upstream,
            rate,
            faults,
            task,
        })
    }

    /// The server moved (restarted on another port): new connections go there.
    pub fn set_upstream(&self, to: SocketAddr) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }

    /// Damages about `per_mille` frames in 1,000 from now on (0: none).
    pub fn set_rate(&self, per_mille: u32) {
        self.rate.store(per_mille, Ordering::SeqCst);
    }

    /// The WebSocket URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}/sssync/ws", self.addr)
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    to: SocketAddr,
    rng: Rng,
    rate: Arc<AtomicU32>,
    faults: Arc<AtomicU64>,
) {
    let Ok(client) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(format!("ws://{to}/sssync/ws")).await
    else {
        return; // the client sees its connection close, and reconnects
    };
    let (client_tx, client_rx) = client.split();
    let (server_tx, server_rx) = server.split();
    let rng = Arc::new(Mutex::new(rng));
    let up = pump(
        client_rx,
        server_tx,
        Dir::ToServer,
        rng.clone(),
        rate.clone(),
        faults.clone(),
    );
    let down = pump(server_rx, client_tx, Dir::ToClient, rng, rate, faults);
    // Either side ending (or a fault cutting it) ends both.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

async fn pump<R, W>(
    mut rx: R,
    mut tx: W,
    dir: Dir,
    rng: Arc<Mutex<Rng>>,
    rate: Arc<AtomicU32>,
    faults: Arc<AtomicU64>,
) where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    W: futures_util::Sink<Message> + Unpin,
{
    let mut held: Option<Message> = None;
    loop {
        // A frame held back (reordered) goes after the next one, or on its own after a while.
        let next = match &held {
            Some(_) => match tokio::time::timeout(Duration::from_millis(30), rx.next()).await {
                Ok(n) => n,
                Err(_) => {
                    if let Some(h) = held.take()
                        && tx.send(h).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
            },
            None => rx.next().await,
        };
        let Some(Ok(msg)) = next else { return };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return,
            other => {
                if tx.send(other).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let (roll, choice, amount) = {
            let mut r = rng.lock().unwrap_or_else(|e| e.into_inner());
            (r.below(1000), r.below(6), r.below(30))
        };
        let mut out: Vec<Message> = Vec::with_capacity(3);
        if roll < u64::from(rate.load(Ordering::SeqCst)) {
            faults.fetch_add(1, Ordering::Relaxed);
            match (dir, choice) {
                // Lost: towards the server, the connection may go on; towards the client, a
                // frame is lost only with its connection.
                (Dir::ToServer, 0) => {}
                (Dir::ToClient, 0) => return,
                (_, 1) => {
                    out.push(Message::text(text.as_str()));
                    out.push(Message::text(text.as_str()));
                }
                (Dir::ToServer, 2) if held.is_none() => {
                    held = Some(Message::text(text.as_str()));
                    continue;
                }
                (_, 2) => {
                    tokio::time::sleep(Duration::from_millis(amount + 1)).await;
                    out.push(Message::text(text.as_str()));
                }
                (_, 3) => {
                    // Cut short: half a message.
                    let cut = text
                        .as_str()
                        .char_indices()
                        .nth(text.len() / 2)
                        .map_or(0, |c| c.0);
                    out.push(Message::text(&text.as_str()[..cut]));
                }
                (_, 4) => {
                    tokio::time::sleep(Duration::from_millis(amount + 1)).await;
                    out.push(Message::text(text.as_str()));
                }
                _ => return, // the connection is cut
            }
        } else {
            out.push(Message::Text(text));
        }
        out.extend(held.take());
        for m in out {
            if tx.send(m).await.is_err() {
                return;
            }
        }
    }
}
