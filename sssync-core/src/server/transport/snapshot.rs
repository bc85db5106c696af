//! `GET {base}/snapshot/{query}?a={args JSON}`: one result as a `snapshot` message, its ETag
//! the digest (an unchanged result costs a `304`).

use super::unavailable;
use crate::protocol::{ErrorCode, ProtocolError, ServerMsg, Snapshot};
use crate::server::Engine;
use crate::server::error::EngineError;
use crate::server::schema::QueryCtx;
use crate::server::store::Store;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;

pub(super) async fn snapshot_handler<S: Store>(
    State(engine): State<Engine<S>>,
    Path(query): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    parts: Parts,
) -> Response {
    let headers = &parts.headers;
    let args = params.get("a").map_or("{}", String::as_str);
    let fail = |status: StatusCode, code: ErrorCode, message: String| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&ProtocolError::new(code, message)).expect("serializes"),
        )
            .into_response()
    };
    if args.len() > engine.limits().max_args_bytes * 4 {
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            "the args are over the limit".into(),
        );
    }
    let ctx = QueryCtx {
        identity: match engine.identify(&parts).await {
            Ok(i) => i,
            Err(e) => return unavailable(&e),
        },
    };
    match engine.snapshot_json(&query, args, &ctx).await {
        Ok((key, v, rows)) => {
            // The digest ignores order; the ETag must not (a reordered result is a new one).
            let order = rows.rows().iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, r| {
                r.key.bytes().chain([0xff]).fold(h, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                })
            });
            let etag = format!("W/\"{}-{order:016x}\"", rows.digest());
            let fresh = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| h.split(',').any(|t| t.trim() == etag));
            let etag_header = HeaderValue::from_str(&etag).expect("ASCII");
            // A result that depends on who asks (a checked or per-identity query) is no shared
            // cache's to keep: one user's rows must never be served to another.
            let private = engine.inner.checked(&key);
            let mark = |mut r: Response| {
                if private {
                    let h = r.headers_mut();
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
                    h.insert(
                        header::VARY,
                        HeaderValue::from_static("Cookie, Authorization"),
                    );
                }
                r
            };
            if fresh {
                return mark(
                    (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response(),
                );
            }
            let body = ServerMsg::Snapshot(Snapshot {
                q: key.name().to_owned(),
                a: serde_json::value::RawValue::from_string(key.args_json().to_owned())
                    .expect("canonical JSON"),
                v,
                reset: false,
                digest: rows.digest(),
                rows: rows.into_rows(),
            })
            .to_json();
            let response = (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    ),
                    (header::ETAG, etag_header),
                    (
                        header::HeaderName::from_static("x-sssync-epoch"),
                        HeaderValue::from_str(&engine.epoch().0).expect("hex"),
                    ),
                ],
                body,
            )
                .into_response();
            mark(response)
        }
        Err(EngineError::UnknownQuery(q)) => fail(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownQuery,
            format!("no query named {q:?} is registered"),
        ),
        Err(EngineError::BadArgs(m)) => fail(StatusCode::BAD_REQUEST, ErrorCode::BadArgs, m),
        Err(EngineError::Forbidden(m)) => fail(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m),
        Err(e @ EngineError::TooLarge(..)) => fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            e.to_string(),
        ),
        Err(e) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        ),
    }
}
