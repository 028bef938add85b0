//! The `bedrock` provider through the real aws-sdk-bedrockruntime against the fake Bedrock:
//! every stream event and every error maps onto the DESIGN.md events and error table.

// Test helpers outside #[test] functions may panic too: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use nagare_gateway::chat::{InferenceParams, Message, Part, Role};
use nagare_gateway::provider::{ModelProvider, ProviderEvent, ProviderRequest, collect};
use nagare_tests::{FakeBedrock, bedrock_provider};

fn request(model: &str) -> ProviderRequest {
    ProviderRequest {
        model_id: model.into(),
        system: Some("be brief".into()),
        messages: vec![Message::text(Role::User, "hello there, model")],
        inference: InferenceParams {
            max_tokens: Some(64),
            temperature: Some(0.25),
            top_p: Some(0.5),
            stop: Some(vec!["END".into()]),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn stream_maps_deltas_stop_and_usage() {
    let fake = FakeBedrock::start().await.unwrap();
    let provider = bedrock_provider(&fake.url());
    let stream = provider
        .converse_stream(request("anthropic.claude-3-haiku-20240307-v1:0"))
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    let events: Vec<ProviderEvent> = events.into_iter().map(Result::unwrap).collect();
    let deltas: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            ProviderEvent::Part(Part::Text { text, .. }) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["Hello", " from", " fake", " Bedrock"]);
    assert!(events.contains(&ProviderEvent::Stop {
        stop_reason: "end_turn".into()
    }));
    let usage = events.iter().find_map(|e| match e {
        ProviderEvent::Usage(u) => Some(*u),
        _ => None,
    });
    assert_eq!(
        usage.map(|u| (u.input_tokens, u.output_tokens)),
        Some((5, 4))
    );
    assert_eq!(fake.calls(), 1);
    assert!(
        fake.wait_for(Duration::from_secs(5), |f| f.completed() == 1)
            .await
    );

    // What the SDK put on the wire is what the request asked for.
    let sent = fake.last_request().unwrap();
    assert_eq!(sent["system"][0]["text"], "be brief");
    assert_eq!(sent["messages"][0]["role"], "user");
    assert_eq!(
        sent["messages"][0]["content"][0]["text"],
        "hello there, model"
    );
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 64);
    assert_eq!(sent["inferenceConfig"]["temperature"], 0.25);
    assert_eq!(sent["inferenceConfig"]["topP"], 0.5);
    assert_eq!(sent["inferenceConfig"]["stopSequences"][0], "END");
}

#[tokio::test]
async fn unary_converse_returns_the_whole_answer() {
    let fake = FakeBedrock::start().await.unwrap();
    let completion = bedrock_provider(&fake.url())
        .converse(request("some.model"))
        .await
        .unwrap();
    assert_eq!(completion.text, "Hello from fake Bedrock");
    assert_eq!(completion.stop_reason, "end_turn");
    assert_eq!(completion.usage.output_tokens, 4);
}

#[tokio::test]
async fn initial_errors_map_to_the_table_without_sdk_retries() {
    let fake = FakeBedrock::start().await.unwrap();
    let provider = bedrock_provider(&fake.url());
    let rows = [
        ("fake.throttle-1", "upstream_throttled", true),
        ("fake.unavailable", "upstream_unavailable", true),
        ("fake.validation", "invalid_request", false),
    ];
    for (i, (model, code, retryable)) in rows.into_iter().enumerate() {
        let err = match provider.converse_stream(request(model)).await {
            Err(e) => e,
            Ok(_) => panic!("{model} should fail"),
        };
        assert_eq!(err.code().as_str(), code, "{model}: {err}");
        assert_eq!(err.retryable(), retryable, "{model}");
        // One call each: the SDK's own retries are off, the gateway owns retrying.
        assert_eq!(fake.calls(), i as u64 + 1, "{model}");
    }
    // fake.throttle-1 throttles only its first call.
    assert!(
        provider
            .converse_stream(request("fake.throttle-1"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn in_stream_exception_ends_the_stream_with_an_error() {
    let fake = FakeBedrock::start().await.unwrap();
    let stream = bedrock_provider(&fake.url())
        .converse_stream(request("fake.midstream-error"))
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(
        &events[0],
        Ok(ProviderEvent::Part(Part::Text { .. }))
    ));
    assert!(matches!(
        &events[1],
        Ok(ProviderEvent::Part(Part::Text { .. }))
    ));
    let err = events[2].as_ref().unwrap_err();
    assert_eq!(err.code().as_str(), "upstream_error");
    assert!(
        err.to_string().contains("ModelStreamErrorException"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stream_without_metadata_is_incomplete() {
    let fake = FakeBedrock::start().await.unwrap();
    let stream = bedrock_provider(&fake.url())
        .converse_stream(request("fake.no-metadata"))
        .await
        .unwrap();
    let err = collect(stream).await.unwrap_err();
    assert_eq!(err.code().as_str(), "upstream_error");
    assert!(err.to_string().contains("before it was complete"));
}

#[tokio::test]
async fn dropping_the_stream_aborts_the_upstream_call() {
    let fake = FakeBedrock::start().await.unwrap();
    let provider = bedrock_provider(&fake.url());
    let mut stream = provider
        .converse_stream(request("fake.slow"))
        .await
        .unwrap();
    assert!(matches!(
        stream.next().await,
        Some(Ok(ProviderEvent::Part(Part::Text { .. })))
    ));
    drop(stream);
    assert!(
        fake.wait_for(Duration::from_secs(5), |f| f.aborted() == 1)
            .await,
        "the fake never saw the stream dropped"
    );
    assert_eq!(fake.completed(), 0);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_upstream_unavailable() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let provider = bedrock_provider(&format!("http://127.0.0.1:{port}"));
    let err = match provider.converse_stream(request("any.model")).await {
        Err(e) => e,
        Ok(_) => panic!("nothing listens there"),
    };
    assert_eq!(err.code().as_str(), "upstream_unavailable", "{err}");
}
