//! The adversarial explorer of identity and access: seeded, deterministic sequences of protocol
//! messages from several raw connections under several identities, on one or two instances of
//! one database, checked against three oracles.
//!
//! - **No leak.** No frame carries rows of a list its connection's identity may not read at that
//!   moment. Access changes (a list made private, shared, unshared, taken over by an
//!   administrator's SQL) are steps of their own; once every instance has fanned one out, every
//!   connection is pinged. Messages are queued in order, so a frame received after the n-th such
//!   pong was sent after the n-th change applied: the access after change n, or after change
//!   n + 1 (it may have been sent before that one's pong), must allow it. A per-identity result
//!   holds only its identity's own rows. An event is applied only for an identity that may write
//!   its list.
//! - **Exactly once** (none lost, none duplicated). An acknowledged event is applied once, a
//!   refused one never; a resend of an acknowledged event is acknowledged as a duplicate.
//! - **None stuck.** Every `sub`, `resync`, event and ping is answered; at the end, every
//!   connection's rows of a list it still follows and may read are the database's, and a fresh
//!   `sub` of every list it may read brings them.
//!
//! The steps: connections opened under a user or anonymously, with a client id of their own or
//! another connection's (refused once that one is owned); `sub` (sometimes with a forged version),
//! `unsub`, `resync` of lists followed or not; events, some sent twice; lists made private,
//! shared and unshared by their owners or by SQL; sessions signed out or given to another user
//! while their connections are open.
//!
//! `cargo test -p sssync-core --features server,sqlite,postgres,native-client --test explorer` runs
//! `EXPLORE_SEQUENCES` sequences (default 240, every fourth on two instances) on SQLite and a
//! fifth as many on PostgreSQL; a failure prints its seed and the command that replays it
//! (`EXPLORE_SEED`). The soak (docs/development.md) runs 100,000 and prints `N sequences: 0
//! leaks, 0 lost, 0 duplicated, 0 stuck`.

mod common;

use common::*;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use sssync_core::protocol::ServerMsg;
use sssync_core::{ErrorCode, Rows, Version};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const LISTS: usize = 3;
const LINKS: usize = 4;
/// Sequences run at once (`EXPLORE_AT_ONCE`, default 4).
fn at_once() -> usize {
    std::env::var("EXPLORE_AT_ONCE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
}
/// How long an answer may take before the sequence counts as stuck.
const ANSWER: Duration = Duration::from_secs(10);

/// splitmix64: the same seed, the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, per_cent: u64) -> bool {
        self.next() % 100 < per_cent
    }
}

/// Who may read and write a list.
#[derive(Clone, Debug, Default, PartialEq)]
struct Access {
    owner: Option<String>,
    shares: BTreeSet<String>,
}

impl Access {
    fn allows(&self, who: Option<&str>) -> bool {
        match &self.owner {
            None => true,
            Some(o) => who == Some(o.as_str()) || who.is_some_and(|w| self.shares.contains(w)),
        }
    }
}

/// What went wrong in a sequence.
#[derive(Default)]
struct Verdict {
    leaks: Vec<String>,
    lost: Vec<String>,
    duplicated: Vec<String>,
    stuck: Vec<String>,
}

impl Verdict {
    fn is_clean(&self) -> bool {
        self.leaks.is_empty()
            && self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.stuck.is_empty()
    }
}

/// One raw connection (a tab, or an intruder).
struct Link {
    /// The identity its upgrade request had (`None`: anonymous): the server's view of it.
    user: Option<String>,
    token: Option<String>,
    client_id: String,
    sink: Option<SplitSink<Ws, Message>>,
    rx: Option<mpsc::Receiver<ServerMsg>>,
    /// The access changes made when what it receives now was sent, at least: those made when
    /// it connected, then those made before its last pong's ping.
    k: usize,
    /// The access changes made before each ping not answered yet, in order.
    marks: std::collections::VecDeque<usize>,
    open: bool,
    rows: HashMap<usize, (Version, Rows)>,
    subs: BTreeSet<usize>,
    /// Lists whose `sub` or `resync` is not answered yet (with the times resent).
    waiting: HashMap<usize, u32>,
    /// Answers to its events, by seq.
    answers: HashMap<u64, ServerMsg>,
    /// The last error without a key (a refused client id).
    refused: bool,
}

impl Link {
    /// A link not connected yet.
    fn closed() -> Link {
        Link {
            user: None,
            token: None,
            client_id: String::new(),
            sink: None,
            rx: None,
            k: 0,
            marks: std::collections::VecDeque::new(),
            open: false,
            rows: HashMap::new(),
            subs: BTreeSet::new(),
            waiting: HashMap::new(),
            answers: HashMap::new(),
            refused: false,
        }
    }
}

/// An event sent, and what became of it.
struct Sent {
    todo: String,
    list: usize,
    /// Acknowledged as applied; refused; not known (its connection closed first).
    acked: bool,
    refused: bool,
    unknown: bool,
}

struct Explorer<'a> {
    servers: &'a [Server],
    rng: Rng,
    tag: String,
    /// Access of each list after each change (index 0: before any).
    access: Vec<Vec<Access>>,
    links: Vec<Link>,
    /// A session token per user (signed in for this sequence), and sessions in use by links.
    tokens: HashMap<String, String>,
    /// The users of this sequence (USERS, named for it: a user's own lists are this
    /// sequence's, whatever ran before on the database).
    users: [String; 3],
    next_seq: HashMap<String, u64>,
    sent: Vec<Sent>,
    verdict: Verdict,
    log: Vec<String>,
}

impl<'a> Explorer<'a> {
    fn new(seed: u64, servers: &'a [Server]) -> Explorer<'a> {
        let tag = format!("x{seed:x}");
        let users = USERS.map(|u| format!("{u}-{tag}"));
        let tokens = users.iter().map(|u| (u.clone(), sign_in(u))).collect();
        Explorer {
            servers,
            rng: Rng(seed),
            tag,
            users,
            access: vec![vec![Access::default(); LISTS]],
            links: (0..LINKS).map(|_| Link::closed()).collect(),
            tokens,
            next_seq: HashMap::new(),
            sent: Vec::new(),
            verdict: Verdict::default(),
            log: Vec::new(),
        }
    }

    fn list_id(&self, l: usize) -> String {
        format!("{}-l{l}", self.tag)
    }

    fn list_of(&self, args: &str) -> Option<usize> {
        let v: serde_json::Value = serde_json::from_str(args).ok()?;
        let id = v.get("list_id")?.as_str()?;
        let i: usize = id.strip_prefix(&format!("{}-l", self.tag))?.parse().ok()?;
        (i < LISTS).then_some(i)
    }

    fn now(&self) -> &Vec<Access> {
        self.access.last().expect("an access state")
    }

    fn note(&mut self, s: String) {
        self.log.push(s);
    }

    /// Opens link `i` under `user` (`None`: anonymous) with `client_id`, on `instance`.
    async fn connect(&mut self, i: usize, user: Option<&str>, client_id: String, instance: usize) {
        let token = user.map(|u| self.tokens[u].clone());
        // The identity the server will see: the session's user now (a signed-out token is
        // anonymous).
        let seen = token.as_deref().and_then(|t| {
            SESSIONS
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|m| m.get(t).cloned())
        });
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let server = &self.servers[instance];
        let mut request = server.ws_url().into_client_request().unwrap();
        if let Some(t) = &token {
            request
                .headers_mut()
                .insert("x-session", t.parse().unwrap());
        }
        // Small frames back to back: no Nagle delay on this side either.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .unwrap();
        let (mut sink, mut stream) = ws.split();
        sink.send(Message::text(
            json!({"t": "hello", "protocol": 1, "client_id": client_id}).to_string(),
        ))
        .await
        .unwrap();
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(t) = frame
                    && let Ok(m) = ServerMsg::parse(&t)
                    && tx.send(m).await.is_err()
                {
                    return;
                }
            }
        });
        let link = Link {
            user: seen,
            token,
            client_id,
            sink: Some(sink),
            rx: Some(rx),
            k: self.access.len() - 1,
            marks: std::collections::VecDeque::new(),
            open: true,
            rows: HashMap::new(),
            subs: BTreeSet::new(),
            waiting: HashMap::new(),
            answers: HashMap::new(),
            refused: false,
        };
        self.links[i] = link;
        // The welcome (or the refusal) first.
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            let Some(m) = self.recv(i, deadline).await else {
                break;
            };
            match m {
                ServerMsg::Welcome(w) => {
                    let id = self.links[i].client_id.clone();
                    let next = self.next_seq.entry(id).or_insert(1);
                    *next = (*next).max(w.last_seq + 1);
                    break;
                }
                other => {
                    self.handle(i, other).await;
                    if !self.links[i].open {
                        break;
                    }
                }
            }
        }
    }

    async fn send(&mut self, i: usize, v: serde_json::Value) {
        let link = &mut self.links[i];
        if !link.open {
            return;
        }
        let ok = match link.sink.as_mut() {
            Some(s) => s.send(Message::text(v.to_string())).await.is_ok(),
            None => false,
        };
        if !ok {
            self.close(i);
        }
    }

    fn close(&mut self, i: usize) {
        let link = &mut self.links[i];
        link.open = false;
        link.sink = None;
        link.rx = None;
        link.waiting.clear();
    }

    /// The next message of link `i`, until `deadline`; `None` when it closed or timed out.
    async fn recv(&mut self, i: usize, deadline: tokio::time::Instant) -> Option<ServerMsg> {
        let rx = self.links[i].rx.as_mut()?;
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => Some(m),
            Ok(None) => {
                self.close(i);
                None
            }
            Err(_) => None,
        }
    }

    /// Handles what link `i` has received so far.
    async fn drain(&mut self, i: usize) {
        loop {
            let Some(rx) = self.links[i].rx.as_mut() else {
                return;
            };
            match rx.try_recv() {
                Ok(m) => self.handle(i, m).await,
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.close(i);
                    return;
                }
            }
        }
    }

    /// Whether rows of list `l` may reach link `i` now (see the module's doc).
    fn may_receive(&self, i: usize, l: usize) -> bool {
        let link = &self.links[i];
        let k = link.k;
        let who = link.user.as_deref();
        [k, k + 1]
            .iter()
            .filter_map(|k| self.access.get(*k))
            .any(|a| a[l].allows(who))
    }

    async fn handle(&mut self, i: usize, m: ServerMsg) {
        match m {
            ServerMsg::Pong(_) => {
                let link = &mut self.links[i];
                if let Some(k) = link.marks.pop_front() {
                    link.k = k;
                }
            }
            ServerMsg::Snapshot(s) => {
                if s.q == "my_lists" {
                    return self.check_mine(i, &s.rows);
                }
                let Some(l) = self.list_of(s.a.get()) else {
                    return;
                };
                if !self.may_receive(i, l) {
                    let leak = format!(
                        "link {i} ({:?}) got a snapshot of list {l} at v {}: {} rows",
                        self.links[i].user,
                        s.v,
                        s.rows.len()
                    );
                    self.verdict.leaks.push(leak);
                }
                let link = &mut self.links[i];
                link.waiting.remove(&l);
                if link.subs.contains(&l)
                    && let Ok(rows) = Rows::new(s.rows)
                {
                    link.rows.insert(l, (s.v, rows));
                }
            }
            ServerMsg::Delta(d) => {
                if d.q == "my_lists" {
                    let rows: Vec<_> = d.puts.iter().map(|p| p.row.clone()).collect();
                    return self.check_mine(i, &rows);
                }
                let Some(l) = self.list_of(d.a.get()) else {
                    return;
                };
                if !self.may_receive(i, l) {
                    let leak = format!(
                        "link {i} ({:?}) got a delta of list {l} to v {}: {} puts",
                        self.links[i].user,
                        d.to,
                        d.puts.len()
                    );
                    self.verdict.leaks.push(leak);
                }
                let link = &mut self.links[i];
                if link.waiting.contains_key(&l) || !link.subs.contains(&l) {
                    return;
                }
                let Some((v, rows)) = link.rows.get_mut(&l) else {
                    return;
                };
                if *v == d.from {
                    let delta = d.delta();
                    if sssync_core::delta::apply(rows, &delta).is_ok() && rows.digest() == d.digest
                    {
                        *v = d.to;
                        return;
                    }
                } else if d.to <= *v {
                    return;
                }
                // A gap or a delta that does not apply: a reset, as a client asks.
                link.rows.remove(&l);
                link.waiting.insert(l, 0);
                let id = self.list_id(l);
                self.send(
                    i,
                    json!({"t": "resync", "q": "list_todos", "a": {"list_id": id}}),
                )
                .await;
            }
            ServerMsg::Error(e) => {
                let key = e.key();
                match (key, e.code) {
                    (Some(k), code) => {
                        let Some(l) = self.list_of(k.args_json()) else {
                            return;
                        };
                        let link = &mut self.links[i];
                        match code {
                            ErrorCode::Forbidden => {
                                link.rows.remove(&l);
                                link.waiting.remove(&l);
                                link.subs.remove(&l);
                            }
                            // Failed for now: subscribe again, as a client does.
                            ErrorCode::QueryFailed | ErrorCode::Overloaded => {
                                let n = link.waiting.get(&l).copied().unwrap_or(0);
                                if n >= 10 {
                                    let why = format!("link {i}: list {l} failed: {e:?}");
                                    self.verdict.stuck.push(why);
                                    link.waiting.remove(&l);
                                    return;
                                }
                                link.waiting.insert(l, n + 1);
                                let id = self.list_id(l);
                                self.send(
                                    i,
                                    json!({"t": "sub", "q": "list_todos", "a": {"list_id": id}}),
                                )
                                .await;
                            }
                            _ => {
                                link.waiting.remove(&l);
                            }
                        }
                    }
                    (None, ErrorCode::Forbidden) => self.links[i].refused = true,
                    (None, ErrorCode::IdentityChanged) => self.close(i),
                    (None, _) => {}
                }
            }
            m @ (ServerMsg::Ack(_)
            | ServerMsg::Reject(_)
            | ServerMsg::Gap(_)
            | ServerMsg::Retry(_)) => {
                let seq = match &m {
                    ServerMsg::Ack(a) => a.seq,
                    ServerMsg::Reject(r) => r.seq,
                    ServerMsg::Gap(g) => g.seq,
                    ServerMsg::Retry(r) => r.seq,
                    _ => unreachable!(),
                };
                self.links[i].answers.insert(seq, m);
            }
            _ => {}
        }
    }

    /// A per-identity result holds only its reader's own lists.
    fn check_mine(&mut self, i: usize, rows: &[sssync_core::Row]) {
        let user = self.links[i].user.clone();
        for r in rows {
            let owner = serde_json::from_str::<serde_json::Value>(r.value.get())
                .ok()
                .and_then(|v| v.get("owner")?.as_str().map(str::to_owned));
            if owner != user {
                let leak = format!("link {i} ({user:?}) got my_lists row {}", r.value.get());
                self.verdict.leaks.push(leak);
            }
        }
    }

    /// Every instance has fanned out the database's current version, then every open link is
    /// pinged and its pong awaited: what arrives later was sent after what came before.
    async fn barrier(&mut self) {
        let deadline = tokio::time::Instant::now() + ANSWER;
        let db = &self.servers[0].db;
        loop {
            let unsealed = db
                .scalar(
                    "SELECT COUNT(*) FROM sssync_changes WHERE version IS NULL",
                    &[],
                )
                .await;
            let v = db
                .scalar("SELECT version FROM sssync_meta WHERE id = 1", &[])
                .await as u64;
            if unsealed == 0
                && self
                    .servers
                    .iter()
                    .all(|s| s.engine.current_version() >= Version(v))
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                self.verdict
                    .stuck
                    .push(format!("the instances did not fan out version {v}"));
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for i in 0..self.links.len() {
            if self.links[i].open {
                let k = self.access.len() - 1;
                self.links[i].marks.push_back(k);
                self.send(i, json!({"t": "ping"})).await;
            }
        }
        for i in 0..self.links.len() {
            while self.links[i].open && !self.links[i].marks.is_empty() {
                match self.recv(i, deadline).await {
                    Some(m) => self.handle(i, m).await,
                    None if self.links[i].open => {
                        self.verdict.stuck.push(format!("link {i}: no pong"));
                        self.close(i);
                    }
                    None => {}
                }
            }
        }
    }

    /// Records an access change (after it applied), then the barrier.
    async fn changed(&mut self, next: Vec<Access>) {
        self.access.push(next);
        self.barrier().await;
    }

    fn user(&mut self) -> Option<String> {
        let r = self.rng.below(USERS.len() + 1);
        self.users.get(r).cloned()
    }

    async fn step(&mut self) {
        let roll = self.rng.below(100);
        let i = self.rng.below(LINKS);
        let l = self.rng.below(LISTS);
        let list = self.list_id(l);
        let open = self.links.get(i).is_some_and(|k| k.open);
        match roll {
            // Connect (or reconnect) link i.
            0..=11 if !open => {
                let user = self.user();
                let j = self.rng.below(LINKS);
                let foreign = self.rng.chance(25) && !self.links[j].client_id.is_empty();
                let client_id = if foreign {
                    self.links[j].client_id.clone()
                } else {
                    format!("{}-c{}", self.tag, self.rng.next() % 1_000_000)
                };
                let instance = self.rng.below(self.servers.len());
                self.note(format!(
                    "connect {i} as {user:?} id {client_id} on {instance}"
                ));
                self.connect(i, user.as_deref(), client_id, instance).await;
            }
            0..=29 if open => {
                let forged = self.rng.chance(20);
                let mut sub = json!({"t": "sub", "q": "list_todos", "a": {"list_id": list}});
                if forged {
                    sub["v"] = json!(self.rng.next() % 200);
                }
                self.note(format!("sub {i} l{l} forged {forged}"));
                let link = &mut self.links[i];
                link.subs.insert(l);
                link.rows.remove(&l);
                link.waiting.insert(l, 0);
                self.send(i, sub).await;
                if self.rng.chance(30) {
                    self.note(format!("resync {i} l{l} at once"));
                    self.send(
                        i,
                        json!({"t": "resync", "q": "list_todos", "a": {"list_id": list}}),
                    )
                    .await;
                }
            }
            30..=36 if open => {
                self.note(format!("resync {i} l{l}"));
                if self.links[i].subs.contains(&l) {
                    self.links[i].rows.remove(&l);
                    self.links[i].waiting.insert(l, 0);
                }
                self.send(
                    i,
                    json!({"t": "resync", "q": "list_todos", "a": {"list_id": list}}),
                )
                .await;
            }
            37..=40 if open => {
                self.note(format!("unsub {i} l{l}"));
                let link = &mut self.links[i];
                link.subs.remove(&l);
                link.rows.remove(&l);
                link.waiting.remove(&l);
                self.send(
                    i,
                    json!({"t": "unsub", "q": "list_todos", "a": {"list_id": list}}),
                )
                .await;
            }
            41..=43 if open => {
                self.note(format!("sub {i} my_lists"));
                self.send(i, json!({"t": "sub", "q": "my_lists", "a": null}))
                    .await;
            }
            44..=64 if open => self.event(i, l).await,
            65..=72 => {
                // The owner (or someone) makes the list private.
                let user = self.user();
                self.access_event(user.as_deref(), "create_list", json!({"id": list}), l)
                    .await;
            }
            73..=84 => {
                let user = self.user();
                let to = self.users[self.rng.below(USERS.len())].clone();
                let on = self.rng.chance(55);
                self.access_event(
                    user.as_deref(),
                    "share",
                    json!({"list_id": list, "user": to, "on": on}),
                    l,
                )
                .await;
            }
            85..=88 => self.sql_access_change(l).await,
            89..=93 => self.session_change().await,
            _ => {
                // Let the messages in flight arrive.
                for j in 0..self.links.len() {
                    self.drain(j).await;
                }
            }
        }
    }

    /// An event on link `i` adding a todo to list `l`, waiting for its answer; sometimes sent
    /// twice.
    async fn event(&mut self, i: usize, l: usize) {
        let client_id = self.links[i].client_id.clone();
        let seq = *self.next_seq.entry(client_id.clone()).or_insert(1);
        let todo = format!("{}-t{}", self.tag, self.sent.len());
        let body = json!({"t": "event", "seq": seq, "name": "add_list_todo",
            "args": {"id": todo, "list_id": self.list_id(l), "title": "x"}});
        let k = self.access.len() - 1;
        let who = self.links[i].user.clone();
        self.note(format!("event {i} seq {seq} {todo} l{l} as {who:?}"));
        self.send(i, body.clone()).await;
        let answer = self.answer(i, seq).await;
        let mut s = Sent {
            todo: todo.clone(),
            list: l,
            acked: false,
            refused: false,
            unknown: false,
        };
        match answer {
            Some(ServerMsg::Ack(a)) if !a.dup => {
                s.acked = true;
                self.next_seq.insert(client_id, seq + 1);
                if !self.access[k][l].allows(who.as_deref()) {
                    let leak = format!("{todo}: written to list {l} by {who:?}, who may not");
                    self.verdict.leaks.push(leak);
                }
                if self.rng.chance(20) {
                    // Sent again (a resend after a lost answer): one write.
                    self.send(i, body).await;
                    match self.answer(i, seq).await {
                        Some(ServerMsg::Ack(a)) if a.dup => {}
                        None => {}
                        other => self
                            .verdict
                            .duplicated
                            .push(format!("{todo}: a resend answered {other:?}")),
                    }
                }
            }
            Some(ServerMsg::Ack(_)) => s.refused = true,
            Some(ServerMsg::Reject(_)) => {
                s.refused = true;
                self.next_seq.insert(client_id, seq + 1);
            }
            Some(ServerMsg::Gap(g)) => {
                s.refused = true;
                self.next_seq.insert(client_id, g.expected);
            }
            Some(_) => s.refused = true,
            // A refused client id (nothing recorded), or the connection closed first.
            None if self.links[i].refused => s.refused = true,
            None => s.unknown = true,
        }
        self.sent.push(s);
    }

    /// The answer to event `seq` on link `i`, handling what comes before it.
    async fn answer(&mut self, i: usize, seq: u64) -> Option<ServerMsg> {
        self.links[i].refused = false;
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            if let Some(a) = self.links[i].answers.remove(&seq) {
                return Some(a);
            }
            if self.links[i].refused || !self.links[i].open {
                return None;
            }
            match self.recv(i, deadline).await {
                Some(m) => self.handle(i, m).await,
                None if self.links[i].open => {
                    self.verdict
                        .stuck
                        .push(format!("link {i}: event {seq} not answered"));
                    self.close(i);
                    return None;
                }
                None => return None,
            }
        }
    }

    /// An event that may change who reads list `l`, applied in-process as `user`; then the
    /// barrier.
    async fn access_event(
        &mut self,
        user: Option<&str>,
        name: &str,
        args: serde_json::Value,
        l: usize,
    ) {
        let engine = &self.servers[self.rng.below(self.servers.len())].engine;
        let answer = match user {
            Some(u) => engine.apply_by(u, name, &args.to_string()).await,
            None => engine.apply(name, &args.to_string()).await,
        };
        self.note(format!("{name} {args} as {user:?}: {answer:?}"));
        let mut next = self.now().clone();
        if matches!(answer, Outcome::Applied { .. }) {
            let a = &mut next[l];
            match name {
                "create_list" => a.owner = user.map(str::to_owned),
                _ => {
                    let to = args["user"].as_str().unwrap().to_owned();
                    if args["on"].as_bool().unwrap() {
                        a.shares.insert(to);
                    } else {
                        a.shares.remove(&to);
                    }
                }
            }
        }
        self.changed(next).await;
    }

    /// An administrator's SQL: the list is given to another user (or nobody), or its shares
    /// go.
    async fn sql_access_change(&mut self, l: usize) {
        let db = &self.servers[0].db;
        let id = self.list_id(l);
        let mut next = self.now().clone();
        if next[l].owner.is_some() && self.rng.chance(50) {
            db.execute("DELETE FROM shares WHERE list_id = $1", &[&id])
                .await;
            next[l].shares.clear();
            self.note(format!("sql: l{l} unshared"));
        } else if next[l].owner.is_some() {
            let to = self.users[self.rng.below(USERS.len())].clone();
            db.execute("UPDATE lists SET owner = $1 WHERE id = $2", &[&to, &id])
                .await;
            next[l].owner = Some(to.clone());
            self.note(format!("sql: l{l} given to {to}"));
        } else {
            return;
        }
        self.changed(next).await;
    }

    /// A user's session ends, or goes to another user, while its connections are open: they
    /// are told their identity changed and close.
    async fn session_change(&mut self) {
        let u = self.users[self.rng.below(USERS.len())].clone();
        let token = self.tokens[&u].clone();
        let to = self.users[self.rng.below(USERS.len())].clone();
        let end = self.rng.chance(50);
        {
            let mut sessions = SESSIONS.lock().unwrap();
            let m = sessions.get_or_insert_with(HashMap::new);
            if end {
                m.remove(&token);
            } else {
                m.insert(token.clone(), to.clone());
            }
        }
        self.note(format!(
            "session of {u}: {}",
            if end {
                "ended".to_owned()
            } else {
                format!("now {to}'s")
            }
        ));
        for s in self.servers {
            s.engine.identities_changed();
        }
        // Its links whose identity changed close.
        let deadline = tokio::time::Instant::now() + ANSWER;
        for i in 0..self.links.len() {
            let link = &self.links[i];
            let changes = link.open
                && link.token.as_deref() == Some(token.as_str())
                && (end || link.user.as_deref() != Some(to.as_str()));
            while changes && self.links[i].open {
                match self.recv(i, deadline).await {
                    Some(m) => self.handle(i, m).await,
                    None if self.links[i].open => {
                        self.verdict
                            .stuck
                            .push(format!("link {i}: not closed after its identity changed"));
                        self.close(i);
                    }
                    None => {}
                }
            }
        }
        if end {
            // Signed in again (a new session), for the links that connect later.
            self.tokens.insert(u.clone(), sign_in(&u));
        }
    }

    /// The end: everything answered, every follower's rows the database's, every reader
    /// served, every acknowledged write applied once.
    async fn finish(&mut self) {
        self.barrier().await;
        let deadline = tokio::time::Instant::now() + ANSWER;
        for i in 0..self.links.len() {
            while self.links[i].open && !self.links[i].waiting.is_empty() {
                match self.recv(i, deadline).await {
                    Some(m) => self.handle(i, m).await,
                    None => break,
                }
            }
            if self.links[i].open && !self.links[i].waiting.is_empty() {
                let w: Vec<usize> = self.links[i].waiting.keys().copied().collect();
                self.verdict
                    .stuck
                    .push(format!("link {i}: lists {w:?} never answered"));
            }
        }
        let db_rows = {
            let mut out = Vec::new();
            for l in 0..LISTS {
                let ids: Vec<String> = self.servers[0]
                    .todos(&self.list_id(l))
                    .await
                    .into_iter()
                    .map(|t| t.id)
                    .collect();
                out.push(ids);
            }
            out
        };
        for i in 0..self.links.len() {
            let link = &self.links[i];
            if !link.open {
                continue;
            }
            for (l, (v, rows)) in &link.rows {
                let may = self.now()[*l].allows(link.user.as_deref());
                let ids: Vec<String> = rows.rows().iter().map(|r| r.key.to_string()).collect();
                if may && link.subs.contains(l) && ids != db_rows[*l] {
                    let why = format!(
                        "link {i}: list {l} at v {v} shows {ids:?}, the database {:?}",
                        db_rows[*l]
                    );
                    self.verdict.stuck.push(why);
                }
            }
        }
        // A fresh sub of every list it may read brings the database's rows.
        for i in 0..self.links.len() {
            if !self.links[i].open {
                continue;
            }
            for l in 0..LISTS {
                if !self.now()[l].allows(self.links[i].user.as_deref()) {
                    continue;
                }
                let link = &mut self.links[i];
                link.subs.insert(l);
                link.rows.remove(&l);
                link.waiting.insert(l, 0);
                let id = self.list_id(l);
                self.send(
                    i,
                    json!({"t": "sub", "q": "list_todos", "a": {"list_id": id}}),
                )
                .await;
            }
            while self.links[i].open && !self.links[i].waiting.is_empty() {
                match self.recv(i, deadline).await {
                    Some(m) => self.handle(i, m).await,
                    None => break,
                }
            }
            let link = &self.links[i];
            for (l, want) in db_rows.iter().enumerate() {
                if !link.open || !self.now()[l].allows(link.user.as_deref()) {
                    continue;
                }
                let ids: Option<Vec<String>> = link
                    .rows
                    .get(&l)
                    .map(|(_, r)| r.rows().iter().map(|r| r.key.to_string()).collect());
                if ids.as_ref() != Some(want) {
                    let why = format!(
                        "link {i}: a fresh sub of list {l} gave {ids:?}, the database {want:?}"
                    );
                    self.verdict.stuck.push(why);
                }
            }
        }
        // Exactly once.
        let in_db: HashSet<String> = db_rows.iter().flatten().cloned().collect();
        for s in &self.sent {
            if s.acked && !in_db.contains(&s.todo) {
                self.verdict.lost.push(format!(
                    "{} (list {}) acknowledged, not applied",
                    s.todo, s.list
                ));
            }
            if s.refused && in_db.contains(&s.todo) {
                self.verdict
                    .duplicated
                    .push(format!("{} (list {}) refused, yet applied", s.todo, s.list));
            }
        }
        let prefix = format!("{}-", self.tag);
        for (client, seq, n) in self.servers[0].applied_twice_of(&prefix).await {
            self.verdict
                .duplicated
                .push(format!("{client} seq {seq} applied {n} times"));
        }
        for link in &mut self.links {
            if let Some(mut s) = link.sink.take() {
                let _ = s.close().await;
            }
        }
    }
}

/// Runs one sequence of `seed` on `servers`.
async fn sequence(seed: u64, servers: &[Server]) -> (Verdict, Vec<String>) {
    let mut x = Explorer::new(seed, servers);
    let steps = 25 + x.rng.below(40);
    for _ in 0..steps {
        x.step().await;
    }
    x.finish().await;
    (x.verdict, x.log)
}

/// Runs `n` sequences from `first` (or the one of `EXPLORE_SEED`) on `db`; panics with the seeds
/// and replay commands of those that failed.
async fn explore(db: TestDb, first: u64, n: u64, label: &str) {
    let replay = std::env::var("EXPLORE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let one = Server::start(&db, 0).await;
    let two = Server::start(&db, 0).await;
    let both = [one, two];
    // A soak may be cut in parts: `EXPLORE_FROM` shifts the first seed.
    let first = first
        + std::env::var("EXPLORE_FROM")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    let seeds: Vec<u64> = match replay {
        Some(s) => vec![s],
        None => (first..first + n).collect(),
    };
    let (mut leaks, mut lost, mut duplicated, mut stuck) = (0, 0, 0, 0);
    let mut report = String::new();
    // A few at once (each on lists and sessions of its own), as clients come.
    let mut done = futures_util::stream::iter(seeds.iter().copied())
        .map(|seed| {
            // Every fourth sequence on two instances of the database (the second one's tailer
            // learns of commits at its 250 ms poll on SQLite: those are the slow ones).
            let servers = if seed % 4 == 3 { &both[..] } else { &both[..1] };
            async move { (seed, servers.len(), sequence(seed, servers).await) }
        })
        .buffer_unordered(at_once());
    let mut finished = 0usize;
    while let Some((seed, instances, (v, log))) = done.next().await {
        leaks += v.leaks.len();
        lost += v.lost.len();
        duplicated += v.duplicated.len();
        stuck += v.stuck.len();
        finished += 1;
        // A long soak says where it is.
        if finished.is_multiple_of(10_000) && finished < seeds.len() {
            eprintln!(
                "{label}: {finished} of {} sequences: {leaks} leaks, {lost} lost, {duplicated} \
                 duplicated, {stuck} stuck so far",
                seeds.len()
            );
        }
        if !v.is_clean() {
            let _ = writeln!(
                report,
                "seed {seed} ({label}, {instances} instance(s)): leaks {:?}, lost {:?}, \
                 duplicated {:?}, stuck {:?}\n  steps: {log:#?}\n  replay: EXPLORE_SEED={seed} \
                 cargo test -p sssync-core --features server,sqlite,postgres,native-client --test explorer \
                 {label} -- --nocapture",
                v.leaks, v.lost, v.duplicated, v.stuck,
            );
        }
    }
    drop(done);
    let [one, two] = both;
    one.stop().await;
    two.stop().await;
    println!(
        "{label}: {} sequences: {leaks} leaks, {lost} lost, {duplicated} duplicated, {stuck} stuck",
        seeds.len()
    );
    assert!(report.is_empty(), "{report}");
}

fn sequences() -> u64 {
    std::env::var("EXPLORE_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_sqlite() {
    explore(TestDb::sqlite(), 1, sequences(), "explore_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    explore(db, 1_000_001, sequences().div_ceil(5), "explore_postgres").await;
}
