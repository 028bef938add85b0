//! `nagare.v1.ConversationService`: the caller's own conversations, as `GET` and `DELETE
//! /v1/conversations` serve them. Someone else's conversation is NOT_FOUND, as a missing one is.

use std::sync::Arc;

use nagare_authorizer::Principal;
use nagare_proto::v1 as pb;
use nagare_proto::v1::conversation_service_server::ConversationService;
use tonic::{Request, Response, Status};

use crate::app::App;
use crate::chat::Role;
use crate::error::Error;
use crate::grpc::auth::authenticate;
use crate::grpc::status;
use crate::store::{ConversationMeta, Turn, check_conversation_id, not_found, page_size};

pub struct ConversationApi {
    app: Arc<App>,
}

impl ConversationApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        authenticate(&self.app, request.metadata())
            .await
            .map_err(|e| status::from_error(&e, None))
    }
}

/// `page_size` (0: the default) and `page_token` (empty: the first page).
fn paging(size: u32, token: &str) -> Result<(usize, Option<&str>), Error> {
    let size = page_size("page_size", (size != 0).then_some(size as usize))?;
    Ok((size, Some(token).filter(|t| !t.is_empty())))
}

fn failed(e: Error) -> Status {
    status::from_error(&e, None)
}

#[tonic::async_trait]
impl ConversationService for ConversationApi {
    async fn list(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let principal = self.caller(&request).await?;
        let r = request.into_inner();
        let (size, token) = paging(r.page_size, &r.page_token).map_err(failed)?;
        let store = self.app.conversations().map_err(failed)?;
        let page = store
            .list(&principal.sub, size, token)
            .await
            .map_err(failed)?;
        Ok(Response::new(pb::ListConversationsResponse {
            conversations: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let principal = self.caller(&request).await?;
        let r = request.into_inner();
        check_conversation_id(&r.conversation_id).map_err(failed)?;
        let (size, token) = paging(r.page_size, &r.page_token).map_err(failed)?;
        let store = self.app.conversations().map_err(failed)?;
        let page = store
            .turns(&principal.sub, &r.conversation_id, size, token)
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(not_found()))?;
        Ok(Response::new(pb::GetConversationResponse {
            conversation_id: r.conversation_id,
            turns: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteConversationRequest>,
    ) -> Result<Response<pb::DeleteConversationResponse>, Status> {
        let principal = self.caller(&request).await?;
        let id = request.into_inner().conversation_id;
        check_conversation_id(&id).map_err(failed)?;
        let store = self.app.conversations().map_err(failed)?;
        if store.delete(&principal.sub, &id).await.map_err(failed)? {
            Ok(Response::new(pb::DeleteConversationResponse {}))
        } else {
            Err(failed(not_found()))
        }
    }
}

impl From<ConversationMeta> for pb::Conversation {
    fn from(m: ConversationMeta) -> Self {
        Self {
            conversation_id: m.conversation_id,
            title: m.title,
            model: m.model,
            created_at: m.created_at,
            updated_at: m.updated_at,
            exchanges: m.exchanges,
        }
    }
}

impl From<Turn> for pb::Turn {
    fn from(t: Turn) -> Self {
        Self {
            exchange: t.exchange,
            role: match t.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            }
            .to_owned(),
            content: t.content,
            request_id: t.request_id,
            usage: t.usage.map(Into::into),
            stop_reason: t.stop_reason,
            created_at: t.created_at,
            sources: t.sources.into_iter().flatten().map(Into::into).collect(),
        }
    }
}
