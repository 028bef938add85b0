//! `GET /`, `/config.json` and `/assets/{version}/{file}`: the browser app (see [`crate::web`]).
//! No token is needed to load the page; everything it then asks for is behind the usual auth.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::error::Error;
use crate::http::ApiError;
use crate::web::{Asset, Site};

/// Fetched fresh each time: it names the current version of everything else.
const NO_CACHE: &str = "no-cache";
/// A versioned file never changes under its name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match &app.web {
        Some(site) => send(site, &site.assets.index, NO_CACHE, &headers),
        None => missing(),
    }
}

pub async fn config(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match &app.web {
        Some(site) => send(site, &site.config, NO_CACHE, &headers),
        None => missing(),
    }
}

pub async fn asset(
    State(app): State<Arc<App>>,
    Path((version, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(site) = &app.web else {
        return missing();
    };
    match site.assets.file(&path) {
        Some(asset) if version == site.assets.version => send(site, asset, IMMUTABLE, &headers),
        // Another build's file, or none: a stale page reloads and gets the current names.
        _ => missing(),
    }
}

/// The error table's 404, as for any route the server does not have.
fn missing() -> Response {
    let error = Error::NotFound("no such file of the browser app".into());
    ApiError::new(&error, uuid::Uuid::new_v4().to_string()).into_response()
}

fn send(site: &Site, asset: &Asset, cache: &'static str, request: &HeaderMap) -> Response {
    let takes_gzip = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let (body, gzipped) = match &asset.gzip {
        Some(z) if takes_gzip => (z.clone(), true),
        _ => (asset.body.clone(), false),
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, site.csp.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}
