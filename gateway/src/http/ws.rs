//! `GET /v1/ws`: the upgrade. Authentication already happened (a 401 comes before any upgrade);
//! the session itself lives in [`crate::ws`].

use std::sync::Arc;

use axum::Extension;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use nagare_authorizer::Principal;
use tracing::Instrument;

use crate::app::App;
use crate::http::ApiError;
use crate::telemetry::Metrics;
use crate::ws;

/// The subprotocol the server speaks; browsers that pass their token as `bearer.<jwt>` must also
/// offer this one, because a browser fails the connection unless the server picks one it offered.
pub const SUBPROTOCOL: &str = "nagare.v1";

const READ_BUFFER_BYTES: usize = 2 * 1024;

pub async fn upgrade(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let seat = match app
        .connections
        .seat(&principal, app.websocket.max_per_principal)
    {
        Ok(seat) => seat,
        Err(e) => return ApiError::new(&e, uuid::Uuid::new_v4().to_string()).into_response(),
    };
    let offered = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == SUBPROTOCOL));
    // Room for a message over the limit to arrive, so it gets an error frame instead of a dropped
    // connection; anything far larger is refused by the protocol layer itself.
    let hard_limit = app
        .websocket
        .max_message_bytes
        .saturating_mul(4)
        .max(64 * 1024);
    // tungstenite's default 128 KiB read buffer, allocated up front, would dominate the memory of
    // an idle connection; chat frames are small, and larger ones still arrive, in more reads.
    let mut upgrade = upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0);
    if offered {
        upgrade = upgrade.protocols([SUBPROTOCOL]);
    }
    let open = app.metrics.as_ref().map(Metrics::websocket_open);
    // The session outlives this request; its chats join the upgrade's trace through this span.
    let session = crate::trace_span!("websocket.session");
    upgrade.on_upgrade(move |socket| {
        async move {
            let (_open, _seat) = (open, seat);
            let (sink, stream) = socket.split();
            let server = ws::Server {
                connections: &app.connections,
                lifecycle: &app.lifecycle,
                reauth: Some((&app.verifier, &app.chat_scope)),
            };
            let (pipeline, settings) = (app.pipeline.clone(), app.websocket.clone());
            ws::run(sink, stream, pipeline, principal, settings, server).await;
        }
        .instrument(session)
    })
}
