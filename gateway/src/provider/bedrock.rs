//! Amazon Bedrock through the real aws-sdk-bedrockruntime: `ConverseStream` and `Converse`.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConverseOutput};
use futures::StreamExt;
use futures::stream;

use crate::error::{Error, StartupError};
use crate::provider::bedrock_errors::map_sdk_error;
use crate::provider::converse::{
    from_stream_event, stream_guardrail, to_converse, to_usage, whole_guardrail,
};
use crate::provider::{
    Completion, EmbedRequest, Embedding, ModelProvider, ProviderRequest, ProviderStream,
};

/// `[provider.bedrock]`: where and how to reach Bedrock. Credentials come from the standard
/// AWS chain (environment, profile, SSO, container or instance role).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BedrockSettings {
    /// Overrides `AWS_REGION` and the profile's region.
    pub region: Option<String>,
    /// Sends requests here instead of the regional endpoint (VPC endpoints, tests).
    pub endpoint_url: Option<String>,
    pub connect_timeout_ms: u64,
}

impl Default for BedrockSettings {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            connect_timeout_ms: 3_000,
        }
    }
}

/// Bedrock Runtime as a [`ModelProvider`].
#[derive(Debug, Clone)]
pub struct BedrockProvider {
    client: Client,
}

impl BedrockProvider {
    /// The provider on the shared AWS config, failing fast, naming the fix, when it has no region
    /// or no credentials can be found.
    pub async fn checked(
        sdk: &SdkConfig,
        settings: &BedrockSettings,
    ) -> Result<Self, StartupError> {
        if sdk.region().is_none() && settings.region.is_none() {
            return Err(StartupError::Provider(
                "provider bedrock: no AWS region; set AWS_REGION or [provider.bedrock] region"
                    .into(),
            ));
        }
        let creds = sdk.credentials_provider().ok_or_else(|| {
            StartupError::Provider("provider bedrock: no AWS credentials provider".into())
        })?;
        let found =
            tokio::time::timeout(Duration::from_secs(10), creds.provide_credentials()).await;
        match found {
            Ok(Ok(_)) => Ok(Self::new(sdk, settings)),
            Ok(Err(e)) => Err(StartupError::Provider(format!(
                "provider bedrock: no AWS credentials found ({e}); set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run where a role is attached"
            ))),
            Err(_) => Err(StartupError::Provider(
                "provider bedrock: looking up AWS credentials timed out after 10 s".into(),
            )),
        }
    }

    /// Builds the client from an already loaded AWS config.
    pub fn new(sdk: &SdkConfig, settings: &BedrockSettings) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .build();
        // Retries belong to the gateway, which knows whether a delta already reached the client.
        let mut config = aws_sdk_bedrockruntime::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = &settings.endpoint_url {
            config = config.endpoint_url(url);
        }
        if let Some(region) = &settings.region {
            config = config.region(Region::new(region.clone()));
        }
        Self {
            client: Client::from_conf(config.build()),
        }
    }
}

/// Sets a [`ConverseInput`]'s parts (all but the guardrail, whose type differs) on a `Converse`
/// or a `ConverseStream` call: two builders with the same setters and no trait in common.
///
/// [`ConverseInput`]: crate::provider::converse::ConverseInput
macro_rules! with_input {
    ($call:expr, $input:expr) => {
        $call
            .set_system($input.system)
            .set_messages(Some($input.messages))
            .inference_config($input.inference)
            .set_tool_config($input.tools)
            .set_additional_model_request_fields($input.additional)
            .set_output_config($input.output)
    };
}

#[async_trait]
impl ModelProvider for BedrockProvider {
    fn name(&self) -> &'static str {
        "bedrock"
    }

    #[tracing::instrument(skip_all, fields(model = %request.model_id))]
    async fn converse_stream(&self, request: ProviderRequest) -> Result<ProviderStream, Error> {
        let input = to_converse(&request)?;
        let guardrail = input.guardrail.as_ref().map(stream_guardrail);
        let call = self.client.converse_stream().model_id(&request.model_id);
        let output = with_input!(call, input)
            .set_guardrail_config(guardrail)
            .send()
            .await
            .map_err(map_sdk_error)?;
        // `None` once the stream has ended or failed: nothing is read after an exception. A
        // Bedrock event may map to two (metadata: a guardrail assessment, then the usage).
        let events = stream::unfold(Some((output.stream, None)), |state| async move {
            let (mut receiver, queued) = state?;
            if let Some(event) = queued {
                return Some((Ok(event), Some((receiver, None))));
            }
            loop {
                match receiver.recv().await {
                    Ok(Some(event)) => match from_stream_event(event) {
                        [Some(first), second] => {
                            return Some((Ok(first), Some((receiver, second))));
                        }
                        [None, Some(only)] => return Some((Ok(only), Some((receiver, None)))),
                        [None, None] => {}
                    },
                    Ok(None) => return None,
                    Err(e) => return Some((Err(map_sdk_error(e)), None)),
                }
            }
        });
        Ok(events.boxed())
    }

    #[tracing::instrument(skip_all, fields(model = %request.model_id))]
    #[tracing::instrument(skip_all, fields(model = %request.model_id))]
    async fn embed(&self, request: EmbedRequest) -> Result<Embedding, Error> {
        super::bedrock_embed::embed(&self.client, request).await
    }

    async fn converse(&self, request: ProviderRequest) -> Result<Completion, Error> {
        let input = to_converse(&request)?;
        let guardrail = input.guardrail.as_ref().map(whole_guardrail);
        let call = self.client.converse().model_id(&request.model_id);
        let output = with_input!(call, input)
            .set_guardrail_config(guardrail)
            .send()
            .await
            .map_err(map_sdk_error)?;
        let text = match &output.output {
            Some(ConverseOutput::Message(message)) => message
                .content()
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::Text(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
            _ => String::new(),
        };
        let usage = output
            .usage
            .as_ref()
            .map(to_usage)
            .ok_or_else(|| Error::UpstreamError {
                message: "Converse returned no usage".into(),
                retryable: true,
            })?;
        Ok(Completion {
            text,
            stop_reason: output.stop_reason.as_str().to_owned(),
            usage,
        })
    }
}
