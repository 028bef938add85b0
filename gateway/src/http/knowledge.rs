//! `/v1/knowledge-bases`: the caller's tenant's knowledge bases on the embedded store. Create,
//! list and delete them; put (text, Markdown, HTML or PDF), list and delete documents; and retrieve
//! passages for a question. Another tenant's knowledge base answers 404, as a missing one does.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nagare_authorizer::Principal;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::chat::{DEFAULT_RESULTS, Filter, KnowledgeScope, parse_json};
use crate::error::Error;
use crate::http::error::respond;
use crate::knowledge::{
    GLOBAL_SCOPE, Scope, SentDocument, check_name, not_found, owner as owner_of,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBase {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Question {
    question: String,
    #[serde(default = "default_results")]
    results: usize,
    #[serde(default)]
    filter: Option<Filter>,
}

fn default_results() -> usize {
    DEFAULT_RESULTS as usize
}

fn read(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Error> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge { limit }
        } else {
            Error::InvalidRequest(e.body_text())
        }
    })
}

/// 204 when something was deleted, else `missing`.
fn no_content_or(deleted: bool, missing: impl FnOnce() -> Error) -> Result<Response, Error> {
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(missing())
    }
}

/// What a route does to the knowledge bases it names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// The owner of the knowledge bases a request means: the caller's tenant, or with
/// `?scope=global` the ones shared with every tenant, which every caller may read and only the
/// `knowledge:global` scope may change. Takes `scope` out of `query`.
fn owner<'a>(
    principal: &'a Principal,
    query: &mut HashMap<String, String>,
    access: Access,
) -> Result<&'a str, Error> {
    let scope = match query.remove("scope").as_deref() {
        None | Some("tenant") => KnowledgeScope::Tenant,
        Some("global") => KnowledgeScope::Global,
        Some(other) => {
            return Err(Error::InvalidRequest(format!(
                "scope: tenant or global, not '{other}'"
            )));
        }
    };
    if scope == KnowledgeScope::Global
        && access == Access::Write
        && !principal.has_scope(GLOBAL_SCOPE)
    {
        return Err(Error::Forbidden(format!(
            "changing the shared knowledge bases needs the {GLOBAL_SCOPE} scope"
        )));
    }
    Ok(owner_of(principal, scope))
}

/// `owner`, for routes that take no other query parameter.
fn only_owner(
    principal: &Principal,
    mut query: HashMap<String, String>,
    access: Access,
) -> Result<&str, Error> {
    let owner = owner(principal, &mut query, access)?;
    match query.keys().next() {
        Some(unknown) => Err(Error::InvalidRequest(format!(
            "unknown query parameter '{unknown}'; use scope"
        ))),
        None => Ok(owner),
    }
}

fn scope<'a>(tenant: &'a str, name: &'a str) -> Result<Scope<'a>, Error> {
    check_name("name", name)?;
    Ok(Scope { tenant, name })
}

/// `POST /v1/knowledge-bases` `{"name"}`: 201 when created, 200 when the tenant had it.
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let kb = app.knowledge()?;
            let tenant = only_owner(&principal, query, Access::Write)?;
            let NewBase { name } = parse_json(&read(body, app.body_limit)?)?;
            check_name("name", &name)?;
            let now = crate::store::unix_now_ms();
            let created = kb.store.create(tenant, &name, now).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(json!({ "name": name }))).into_response())
        }
        .await,
    )
}

/// `GET /v1/knowledge-bases`.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let tenant = only_owner(&principal, query, Access::Read)?;
            let names = app.knowledge()?.store.list(tenant).await?;
            let bases: Vec<_> = names
                .into_iter()
                .map(|name| json!({ "name": name }))
                .collect();
            Ok(Json(json!({ "knowledge_bases": bases })).into_response())
        }
        .await,
    )
}

/// `DELETE /v1/knowledge-bases/{name}`: the knowledge base and every document in it.
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let tenant = only_owner(&principal, query, Access::Write)?;
            let deleted = app.knowledge()?.store.delete(scope(tenant, &name)?);
            no_content_or(deleted.await?, || not_found(&name))
        }
        .await,
    )
}

/// `GET /v1/knowledge-bases/{name}/documents`.
pub async fn documents(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let tenant = only_owner(&principal, query, Access::Read)?;
            let documents = app
                .knowledge()?
                .store
                .documents(scope(tenant, &name)?)
                .await?;
            Ok(Json(json!({ "documents": documents })).into_response())
        }
        .await,
    )
}

/// `PUT /v1/knowledge-bases/{name}/documents/{id}?title=&uri=`: the document itself, as
/// `text/plain`, `text/markdown`, `text/html` or `application/pdf`; it replaces one with the same id.
pub async fn put_document(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path((name, document_id)): Path<(String, String)>,
    Query(mut query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let kb = app.knowledge()?;
            let tenant = owner(&principal, &mut query, Access::Write)?;
            let scope = scope(tenant, &name)?;
            let (title, uri) = (query.remove("title"), query.remove("uri"));
            if let Some(unknown) = query.keys().next() {
                return Err(Error::InvalidRequest(format!(
                    "unknown query parameter '{unknown}'; use title, uri and scope"
                )));
            }
            let body = read(body, kb.max_document_bytes)?;
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain");
            let sent = SentDocument {
                document_id: &document_id,
                title,
                uri,
                content_type,
                body: &body,
            };
            let info = kb.put(scope, sent, crate::store::unix_now_ms()).await?;
            Ok(Json(info).into_response())
        }
        .await,
    )
}

/// `DELETE /v1/knowledge-bases/{name}/documents/{id}`.
pub async fn delete_document(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path((name, document_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let store = &app.knowledge()?.store;
            let tenant = only_owner(&principal, query, Access::Write)?;
            let deleted = store.delete_document(scope(tenant, &name)?, &document_id);
            no_content_or(deleted.await?, || {
                Error::NotFound(format!("no document {document_id}"))
            })
        }
        .await,
    )
}

/// `POST /v1/knowledge-bases/{name}/retrieve` `{"question", "results"?, "filter"?}`: the passages a chat
/// would be given, best first.
pub async fn retrieve(
    State(app): State<Arc<App>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let kb = app.knowledge()?;
            let tenant = only_owner(&principal, query, Access::Read)?;
            let Question {
                question,
                results,
                filter,
            } = parse_json(&read(body, app.body_limit)?)?;
            if let Some(filter) = &filter {
                filter.check("filter")?;
            }
            let passages = kb
                .retrieve(scope(tenant, &name)?, &question, results, filter.as_ref())
                .await?;
            Ok(Json(json!({ "passages": passages })).into_response())
        }
        .await,
    )
}
