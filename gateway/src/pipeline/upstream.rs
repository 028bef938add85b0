//! Opening the model stream of a chat: its model, then each fallback in order, skipping models
//! whose circuit is open. The provider has already retried each one (`ResilientProvider`); a
//! fallback is for when that was not enough.

use std::time::Instant;

use futures::StreamExt;
use tracing::Instrument;

use crate::error::Error;
use crate::limits::Slot;
use crate::pipeline::flight::Upstream;
use crate::provider::{Breakers, ModelProvider, ProviderRequest, ProviderStream};
use crate::telemetry;

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
    request: ProviderRequest,
    chain: &[String],
    slot: Option<Slot>,
) -> Result<Upstream, Error> {
    let opened_at = Instant::now();
    let first = chain.first().map_or("", String::as_str);
    let span = telemetry::model_call_span(provider.name(), first, request.inference.max_tokens);
    match first_working(provider, breakers, request, chain)
        .instrument(span.clone())
        .await
    {
        Ok((stream, model)) => {
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
            Ok(Upstream {
                stream,
                model,
                opened_at,
                span,
            })
        }
        Err(e) => {
            telemetry::record_error(&span, e.code().as_str());
            Err(e)
        }
    }
}

/// The stream of the first model in `chain` that answers, and that model.
async fn first_working(
    provider: &dyn ModelProvider,
    breakers: &Breakers,
    mut request: ProviderRequest,
    chain: &[String],
) -> Result<(ProviderStream, String), Error> {
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
                return Ok((stream, model.clone()));
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
