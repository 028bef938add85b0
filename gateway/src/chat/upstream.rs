//! Opening the model stream of a chat: its model, then each fallback in order, skipping models
//! whose circuit is open. The provider has already retried each one (`ResilientProvider`); a
//! fallback is for when that was not enough.

use futures::StreamExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::chat::flight::Upstream;
use crate::error::Error;
use crate::provider::{Breakers, ModelProvider, ProviderRequest};

/// Failures that say the model (not the request) is in trouble: these count against its circuit
/// and move on to the next model.
fn model_trouble(error: &Error) -> bool {
    matches!(
        error,
        Error::UpstreamThrottled { .. }
            | Error::UpstreamUnavailable(_)
            | Error::UpstreamTimeout(_)
            | Error::UpstreamError { .. }
    )
}

/// Calls `chain[0]`, then the next model whenever one is in trouble or its circuit is open. A
/// request error (a bad prompt, say) is returned at once: another model would refuse it too.
pub async fn open(
    provider: &dyn ModelProvider,
    breakers: &Breakers,
    mut request: ProviderRequest,
    chain: &[String],
    slot: Option<OwnedSemaphorePermit>,
) -> Result<Upstream, Error> {
    let mut last = None;
    for model in chain {
        if !breakers.allow(model) {
            last = Some(Error::UpstreamUnavailable(format!(
                "the circuit for {model} is open after repeated failures"
            )));
            continue;
        }
        request.model_id.clone_from(model);
        match provider.converse_stream(request.clone()).await {
            Ok(stream) => {
                breakers.record(model, true);
                if model != &chain[0] {
                    tracing::info!(model = %model, "served by a fallback model");
                }
                // The slot is held by the stream, so it frees when the stream ends or is dropped.
                let stream = match slot {
                    Some(slot) => stream
                        .map(move |event| {
                            let _held = &slot;
                            event
                        })
                        .boxed(),
                    None => stream,
                };
                return Ok(Upstream {
                    stream,
                    model: model.clone(),
                });
            }
            Err(e) if model_trouble(&e) => {
                breakers.record(model, false);
                tracing::warn!(model = %model, code = e.code().as_str(), "model failed; trying the next");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Internal("no model to call".into())))
}
