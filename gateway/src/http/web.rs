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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use nagare_authorizer::{AuthSettings, Verifier};
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::app::{App, test_app};
    use crate::http::router;
    use crate::pipeline::test_support::mock_pipeline;

    fn state() -> Arc<App> {
        let verifier = Verifier::new(
            &AuthSettings::default(),
            Some(b"web-test-secret-of-32-bytes!!!!!"),
        );
        test_app(mock_pipeline(), verifier.unwrap())
    }
    /// GETs `path` without a token, with `accept-encoding` when given.
    async fn get_page(
        app: &Arc<App>,
        path: &str,
        encoding: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        if let Some(e) = encoding {
            req = req.header("accept-encoding", e);
        }
        let response = router(app.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn the_browser_app_is_served_without_a_token_locked_down_and_versioned() {
        let app = state();
        let (status, headers, body) = get_page(&app, "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        assert_eq!(headers["cache-control"], "no-cache");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self';"),
            "{csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["x-frame-options"], "DENY");
        let page = String::from_utf8(body).unwrap();
        let version = page
            .split("assets/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();

        // The versioned files are kept for a year, and gzipped for a browser that takes it.
        let path = format!("/assets/{version}/js/main.js");
        let (status, headers, plain) = get_page(&app, &path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(headers.get("content-encoding").is_none());
        let (_, headers, zipped) = get_page(&app, &path, Some("br, gzip;q=0.8")).await;
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["vary"], "accept-encoding");
        assert!(zipped.len() < plain.len());

        // Another build's file, a file that is not the app's, or a path out of it: 404.
        for missing in [
            "/assets/000000000000/js/main.js".to_owned(),
            format!("/assets/{version}/js/nope.js"),
            format!("/assets/{version}/../Cargo.toml"),
        ] {
            let (status, _, _) = get_page(&app, &missing, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        }

        let (status, headers, body) = get_page(&app, "/config.json", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["cache-control"], "no-cache");
        let config: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(config["ws_token"], "protocol");
        assert_eq!(config["features"]["conversations"], false);
    }
}
