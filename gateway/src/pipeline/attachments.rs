//! A chat's images and documents on their way through the pipeline: a client's resolved by the
//! uploads' [`Attach`] (or refused when uploads are off), recalled history's loaded again.

use nagare_authorizer::Principal;
use tracing::Instrument;

use crate::chat::{Block, ChatRequest, Message};
use crate::error::Error;
use crate::uploads::{Attach, detach};

/// Resolves the new message's attachments (`content`, or the last of `messages`).
pub(super) async fn new_turn(
    attach: Option<&Attach>,
    principal: &Principal,
    request: &ChatRequest,
    blocks: &mut [Block],
) -> Result<(), Error> {
    let field = || match &request.messages {
        Some(m) => format!("messages[{}].content", m.len().saturating_sub(1)),
        None => "content".into(),
    };
    from_client(attach, principal, field, blocks)
        .instrument(crate::trace_span!("attachments"))
        .await
}

/// Resolves the attachments of earlier messages the client sent (the stateless form).
pub(super) async fn sent_history(
    attach: Option<&Attach>,
    principal: &Principal,
    history: &mut [Message],
) -> Result<(), Error> {
    for (i, m) in history.iter_mut().enumerate() {
        let field = || format!("messages[{i}].content");
        from_client(attach, principal, field, &mut m.content).await?;
    }
    Ok(())
}

/// Loads the bytes of recalled history's attachments; with uploads off, each becomes its note.
pub(super) async fn recalled(
    attach: Option<&Attach>,
    history: &mut [Message],
    new_turn: &[Block],
) -> Result<(), Error> {
    match attach {
        Some(attach) => {
            attach
                .load_history(history, new_turn)
                .instrument(crate::trace_span!("attachments.history"))
                .await
        }
        // Attachments kept while uploads were on, read with them off.
        None => {
            detach(history);
            Ok(())
        }
    }
}

/// `field` names the blocks in errors; it is only made when they hold an attachment.
async fn from_client(
    attach: Option<&Attach>,
    principal: &Principal,
    field: impl FnOnce() -> String,
    blocks: &mut [Block],
) -> Result<(), Error> {
    if !blocks.iter().any(Block::is_attachment) {
        return Ok(());
    }
    match attach {
        Some(attach) => attach.from_client(principal, &field(), blocks).await,
        None => Err(Error::InvalidRequest(format!(
            "{}: attachments are not enabled on this server",
            field()
        ))),
    }
}
