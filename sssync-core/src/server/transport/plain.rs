//! The plain-HTTP path for clients without WebSocket: server-sent events for a fixed set of
//! subscriptions (`GET {base}/sse`), and `POST {base}/events`. Stateless: any instance serves
//! either.

use super::reidentify::Reidentify;
use super::ws::PING_EVERY;
use super::{check_hello, json_error, unavailable};
use crate::protocol::{ErrorCode, EventsBody, Hello, ProtocolError, ServerMsg, Sub};
use crate::server::Engine;
use crate::server::cmd::{EventCmd, Reply};
use crate::server::error::EngineError;
use crate::server::hub::{Outbox, slow_consumer};
use crate::server::store::Store;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The query of `GET /sssync/sse`: the client's `hello` and its subscriptions, as JSON.
#[derive(serde::Deserialize)]
pub(super) struct SseParams {
    hello: String,
    #[serde(default)]
    subs: Option<String>,
}

/// Server-sent events: `welcome`, then the subscriptions' snapshots or resume deltas, then live
/// deltas, each as one `data:` line of JSON.
pub(super) async fn sse_handler<S: Store>(
    State(engine): State<Engine<S>>,
    Query(params): Query<SseParams>,
    parts: Parts,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let limits = engine.limits().clone();
    if params.hello.len() + params.subs.as_ref().map_or(0, String::len) > limits.max_message_bytes {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "the query is over the limit",
        );
    }
    let hello = match serde_json::from_str::<Hello>(&params.hello)
        .map_err(|e| ProtocolError::new(ErrorCode::Malformed, e.to_string()))
        .and_then(check_hello)
    {
        Ok(h) => h,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.code, e.message),
    };
    let subs: Vec<Sub> = match params.subs.as_deref().map(serde_json::from_str).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, ErrorCode::Malformed, e.to_string()),
    };
    if subs.len() > limits.max_subscriptions {
        return json_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::TooManySubscriptions,
            format!(
                "at most {} subscriptions per connection",
                limits.max_subscriptions
            ),
        );
    }
    let identity = match engine.identify(&parts).await {
        Ok(i) => i,
        Err(e) => return unavailable(&e),
    };
    let keys = match subs
        .iter()
        .map(|s| engine.key(&s.q, s.a.get(), &identity))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(k) => k,
        Err(EngineError::UnknownQuery(q)) => {
            return json_error(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownQuery,
                format!("no query named {q:?} is registered"),
            );
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, ErrorCode::BadArgs, e.to_string()),
    };
    let (welcome, same_history) = match Box::pin(engine.welcome(&hello, &identity)).await {
        Ok(w) => w,
        Err(EngineError::Forbidden(m)) => {
            return json_error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m);
        }
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                format!("the server cannot welcome this client now: {e}"),
            );
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let (outbox, mut queue) = Outbox::new(
            engine.next_conn_id(),
            limits.max_queued_messages,
            limits.max_queued_bytes,
        );
        let outbox = outbox.with_identity(identity.clone());
        let mut reidentify = Reidentify::new(&engine, parts, identity);
        let mut epoch = engine.inner.epoch.subscribe();
        let welcome = ServerMsg::Welcome(welcome);
        if tx
            .send(Event::default().data(welcome.to_json()))
            .await
            .is_err()
        {
            return;
        }
        // Subscribed while the queue drains: several big snapshots must not pile up first.
        let subscribing = {
            let (engine, outbox, keys) = (engine.clone(), outbox.clone(), keys.clone());
            tokio::spawn(async move {
                for (key, sub) in keys.iter().zip(&subs) {
                    let v = sub.v.filter(|_| same_history);
                    if engine.subscribe(key.clone(), &outbox, v).await.is_err() {
                        return;
                    }
                }
            })
        };
        let mut stop = engine.inner.stop.subscribe();
        loop {
            tokio::select! {
                Some(out) = queue.recv() => {
                    if tx.send(Event::default().data(out.as_str())).await.is_err() {
                        break;
                    }
                }
                _ = outbox.wake.notified() => {
                    if outbox.is_slow() {
                        let _ = tx.send(Event::default().data(slow_consumer().to_json())).await;
                        break;
                    }
                }
                _ = epoch.changed() => break,
                _ = tx.closed() => break,
                _ = stop.changed() => break,
                _ = reidentify.due() => {
                    if let Err(msg) = Box::pin(reidentify.check(&engine)).await {
                        let _ = tx.send(Event::default().data(msg.to_json())).await;
                        break;
                    }
                }
            }
        }
        subscribing.abort();
        for key in &keys {
            engine.unsubscribe(key, &outbox);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(PING_EVERY))
        .into_response()
}

/// Events applied over plain HTTP: the answer is their outcomes (`ack`, `reject`, `gap`), in
/// order, as a JSON array.
pub(super) async fn events_handler<S: Store>(
    State(engine): State<Engine<S>>,
    parts: Parts,
    body: axum::body::Bytes,
) -> Response {
    let limits = engine.limits();
    let identity = match engine.identify(&parts).await {
        Ok(i) => i,
        Err(e) => return unavailable(&e),
    };
    let parsed = match EventsBody::decode(&body, limits) {
        Ok(b) => b,
        Err(e) => {
            let status = if e.code == ErrorCode::TooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return json_error(status, e.code, e.message);
        }
    };
    // Submit them all before waiting, so that they share one batch (one commit).
    let mut waiting = Vec::with_capacity(parsed.events.len());
    for e in parsed.events {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = EventCmd::from_wire(
            parsed.client_id.as_str().into(),
            &identity,
            e,
            limits,
            Reply::Once(tx),
        );
        if engine.submit(cmd).await.is_err() {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                "the engine has stopped",
            );
        }
        waiting.push(rx);
    }
    let mut out = Vec::with_capacity(waiting.len());
    for rx in waiting {
        out.push(
            rx.await.unwrap_or_else(|_| {
                ServerMsg::error(ErrorCode::Internal, "the engine has stopped")
            }),
        );
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&out).expect("serializes"),
    )
        .into_response()
}
