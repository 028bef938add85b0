#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The browser app in real Chromium (Debian's `chromium`, driven by `playwright-core` from
//! `tests/js/web_app.mjs`) against a live `nagare serve`: sign-in by link, answers that stream
//! into the page, reload, hostile model text, the list of conversations paging in, delete, the
//! 360 px layout, screenshots and the figures of the closing note; then Markdown, Stop, Esc and a
//! dropped socket aborting the model call at a fake Bedrock, the reconnection, and a rate limit
//! counting down; and sign-in with an OpenID
//! Connect provider (a fake Cognito) by the authorization-code flow with PKCE, renewed in time.
//!
//! Screenshots and figures land in `target/tmp/web-app/`.

use std::sync::Arc;

use base64::Engine;
use futures::StreamExt;
use jsonwebtoken::Algorithm;
use nagare_authorizer::{AuthSettings, Verifier};
use nagare_gateway::provider::{MockProvider, MockSettings};
use nagare_gateway::web::OidcSettings;
use nagare_tests::fake_oauth::{CLIENT_ID, FakeOAuth};
use nagare_tests::served::Served;
use nagare_tests::{FakeBedrock, FakeIssuer, Gateway, TestKey};
use serde_json::{Value, json};

/// Where the screenshots and figures go.
fn out_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-app");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a scenario of `tests/js/web_app.mjs`; it fails with what to install when Chromium is
/// missing.
async fn browser(scenario: &str, settings: Value) -> Value {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            || std::env::var_os("NAGARE_TEST_CHROMIUM").is_some(),
        "Chromium is missing: run tests/run.sh, or apt-get install chromium (or set NAGARE_TEST_CHROMIUM)"
    );
    let seen = nagare_tests::node_json("web_app.mjs", &[scenario, &settings.to_string()]).await;
    assert_eq!(seen["errors"], json!([]), "the page threw or logged errors");
    assert_eq!(
        seen["violations"],
        json!([]),
        "the page broke its Content-Security-Policy"
    );
    seen
}

fn assert_png(dir: &std::path::Path, shot: &str) {
    let png = std::fs::read(dir.join(format!("{shot}.png"))).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{shot}.png");
}

#[tokio::test]
async fn the_browser_app_streams_restores_pages_and_shows_model_text_as_text() {
    let served = Served::start(&[
        ("NAGARE__PROVIDER__MOCK__TTFT_MS", "100"),
        ("NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND", "200"),
        ("NAGARE__MODELS__ALIASES__FAST", "mock"),
        ("NAGARE__MODELS__ALIASES__SMART", "mock.slow"),
        ("NAGARE__MODELS__ALIASES__LONG", "mock.long"),
    ]);
    // Carol has more conversations than one page of the list (30).
    let carol = served.mint(&["--sub", "carol"]);
    let client = reqwest::Client::new();
    let statuses: Vec<u16> = futures::stream::iter(0..35)
        .map(|n| {
            let request = client
                .post(format!("{}/v1/chat", served.http))
                .bearer_auth(&carol)
                .json(&json!({"message": format!("Topic {n}"), "inference": {"max_tokens": 1}}));
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");

    // Alice has a knowledge base, and a conversation with reasoning and a tool call.
    let alice = &served.token;
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", served.http))
            .bearer_auth(alice)
            .json(&body)
            .send()
    };
    let created = post("/v1/knowledge-bases", json!({"name": "handbook"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let leave = client
        .put(format!(
            "{}/v1/knowledge-bases/handbook/documents/leave?uri=https://intranet.example/leave",
            served.http
        ))
        .bearer_auth(alice)
        .header("content-type", "text/markdown")
        .body("# Leave\n\nUp to 5 unused days carry over to the next year.\n")
        .send()
        .await
        .unwrap();
    assert!(leave.status().is_success(), "{leave:?}");
    let tools = json!([{"name": "get_weather", "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let turn: Value = post(
        "/v1/chat",
        json!({"message": "Use get_weather for Paris", "tools": tools, "reasoning": {"effort": "low"}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(turn["stop_reason"], "tool_use", "{turn}");
    let tools_conversation = turn["conversation_id"].as_str().unwrap();

    let screenshots = out_dir();
    let xss = "<img src=x onerror=\"window.__xss='img'\"> <script>window.__xss='script'</script> \
               [click](javascript:window.__xss='link') and https://example.com/docs";
    let seen = browser(
        "chat",
        json!({
            "alice": served.mint(&["--sub", "alice", "--link", &served.http]),
            "carol": served.mint(&["--sub", "carol", "--link", &served.http]),
            "xss": xss,
            "screenshots": screenshots,
            "png": base64::engine::general_purpose::STANDARD.encode(nagare_tests::samples::png(3, 2, 7)),
            "tools_conversation": tools_conversation,
        }),
    )
    .await;

    // Signed in by the link; the token left the address bar at once.
    assert_eq!(seen["who"], "alice");
    let url = seen["url_after_sign_in"].as_str().unwrap();
    assert!(!url.contains("token"), "{url}");
    let csp = seen["csp"]
        .as_str()
        .expect("a Content-Security-Policy header");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }

    // The answer was on screen in pieces before `done`, and its figures were shown.
    let grew = seen["grew_while_streaming"].as_u64().unwrap();
    assert!(grew >= 2, "the answer grew {grew} times while streaming");
    let answer = seen["first_answer"].as_str().unwrap();
    assert!(
        answer.starts_with("You said: Tell me about streams"),
        "{answer}"
    );
    let meta = seen["first_meta"].as_str().unwrap();
    for part in ["mock · ", " in / ", " out tokens", "first token after"] {
        assert!(meta.contains(part), "{part:?} in {meta:?}");
    }

    // Hostile text stayed text: nothing ran, no element was made of it, only the http link is one.
    let hostile = &seen["xss"];
    assert_eq!(hostile["ran"], Value::Null, "injected code ran");
    assert_eq!(hostile["images"], 0);
    assert_eq!(hostile["scripts"], 0);
    assert_eq!(hostile["javascript_links"], 0);
    assert_eq!(
        hostile["http_links"],
        json!([["https://example.com/docs", "noopener noreferrer nofollow"]])
    );
    let text = hostile["text"].as_str().unwrap();
    for shown in [
        "<img src=x onerror=",
        "<script>window.__xss='script'</script>",
        "javascript:",
    ] {
        assert!(text.contains(shown), "{shown:?} shown as text in {text:?}");
    }

    // The picture went up through the upload API and reached the model.
    let picture = &seen["picture"];
    let described = picture["answer"].as_str().unwrap();
    assert!(described.starts_with("I see a png image"), "{described}");
    assert!(described.contains("3×2 pixels"), "{described}");
    assert_eq!(picture["chips"], json!(["dot.png"]));
    assert_eq!(picture["left"], 0, "the attachment was sent and cleared");

    let dropped = seen["dropped"].as_str().unwrap();
    assert!(
        dropped.starts_with("I see a txt document named 'receipt'"),
        "{dropped}"
    );
    assert_eq!(seen["unlabelled"], json!([]), "controls without a name");
    assert_eq!(
        seen["focus"],
        json!(["send", "3px"]),
        "Tab from the message box reaches Send, with a visible ring"
    );

    // Reload: the same conversation, from history.
    let restored = &seen["after_reload"];
    let conversation_url = seen["conversation_url"].as_str().unwrap();
    assert!(conversation_url.contains("?c="), "{conversation_url}");
    assert_eq!(restored["url"], conversation_url);
    assert_eq!(restored["first_answer"], answer);
    assert_eq!(restored["users"][0], "Tell me about streams");
    assert_eq!(seen["dark_background"], "rgb(13, 17, 23)");

    // The knowledge base's source is listed and linked, and the answer's [1] points at it.
    let sources = &seen["sources"];
    assert_eq!(sources["summary"], "Sources (1)", "{sources}");
    assert_eq!(sources["links"], json!(["https://intranet.example/leave"]));
    assert_eq!(sources["citations"], json!([["[1]", true]]));

    // The slow answer went on streaming while the quick one was asked, and is whole.
    let parallel = &seen["parallel"];
    assert!(
        parallel["slow_meta"]
            .as_str()
            .unwrap()
            .starts_with("mock.slow · "),
        "{parallel}"
    );
    assert_ne!(parallel["url"], seen["quick_url"]);
    assert!(
        parallel["url"].as_str().unwrap().contains("?c="),
        "{parallel}"
    );

    // History's reasoning and tool call, each collapsed under its summary.
    let blocks = seen["blocks"].as_array().unwrap();
    let summaries: Vec<&str> = blocks.iter().map(|b| b[0].as_str().unwrap()).collect();
    assert!(summaries.contains(&"Reasoning"), "{blocks:?}");
    assert!(summaries.contains(&"Tool call: get_weather"), "{blocks:?}");
    assert!(
        blocks.iter().all(|b| b[1] == false),
        "collapsed: {blocks:?}"
    );
    let call = blocks
        .iter()
        .find(|b| b[0] == "Tool call: get_weather")
        .unwrap();
    assert!(
        call[2].as_str().unwrap().contains("\"city\": \"Paris\""),
        "{call:?}"
    );

    for shot in ["light", "dark"] {
        assert_png(&screenshots, shot);
    }

    // The list paged in as it scrolled, and the delete went through to the store.
    assert_eq!(seen["listed_first"], 30);
    assert_eq!(seen["listed_all"], 35);
    let deleted = seen["deleted"].as_str().unwrap();
    assert!(
        seen["opened_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("?c={deleted}"))
    );
    assert!(
        seen["confirmation"]
            .as_str()
            .unwrap()
            .starts_with("Delete the conversation")
    );
    assert_eq!(seen["after_delete"]["listed"], 34);
    assert!(
        !seen["after_delete"]["url"]
            .as_str()
            .unwrap()
            .contains("?c=")
    );
    let gone = client
        .get(format!("{}/v1/conversations/{deleted}", served.http))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // The figures: every delta painted; size, paint times and the main thread's share recorded.
    let paint = &seen["paint"];
    let deltas = paint["deltas"].as_u64().unwrap();
    assert!(deltas > 1000, "a long answer: {paint}");
    assert_eq!(paint["painted"], deltas, "a delta was never seen on screen");
    assert!(seen["long_words"].as_u64().unwrap() > 1000);
    let transferred = seen["transferred_bytes"].as_u64().unwrap();
    assert!(
        transferred > 0 && transferred < 64 * 1024,
        "the app transfers {transferred} bytes"
    );
    let figures = json!({
        "transferred_bytes": transferred,
        "paint": paint,
        "main_thread": seen["main_thread"],
    });
    println!("browser app figures: {figures}");
    std::fs::write(out_dir().join("figures.json"), figures.to_string()).unwrap();
}

#[tokio::test]
async fn markdown_at_360_px_then_stop_esc_and_a_dropped_socket_abort_upstream_and_a_limit_counts_down()
 {
    let fake = FakeBedrock::start().await.unwrap();
    let endpoint = fake.url();
    let served = Served::start(&[
        ("NAGARE__PROVIDER__KIND", "bedrock"),
        ("NAGARE__PROVIDER__BEDROCK__ENDPOINT_URL", &endpoint),
        ("NAGARE__MODELS__ALIASES__SLOW", "fake.slow"),
        ("NAGARE__MODELS__ALIASES__MARKDOWN", "fake.markdown"),
        ("NAGARE__MODELS__DEFAULT", "slow"),
        ("NAGARE__RATE_LIMITS__REQUESTS_PER_MINUTE", "2"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]);
    let screenshots = out_dir();
    let seen = browser(
        "stop",
        json!({
            "alice": served.mint(&["--sub", "alice", "--link", &served.http]),
            "bob": served.mint(&["--sub", "bob", "--link", &served.http]),
            "erin": served.mint(&["--sub", "erin", "--link", &served.http]),
            "frank": served.mint(&["--sub", "frank", "--link", &served.http]),
            "screenshots": screenshots,
        }),
    )
    .await;

    // The Markdown answer, cut every 7 bytes, was built into the right elements and nothing else.
    let md = &seen["markdown"];
    // `###` is an h5: the page's own headings are h1 and h2, an answer's start below them.
    assert_eq!(md["headings"], json!([["H5", "Streams"]]));
    assert_eq!(md["strong"], json!(["stream"]));
    assert_eq!(md["em"], json!(["arrives over time"]));
    assert_eq!(md["bullets"], json!(["one item", "two with inline code"]));
    assert_eq!(md["inline_code"], json!(["inline code"]));
    assert_eq!(md["numbered"], json!(["first", "second"]));
    assert_eq!(md["quotes"], json!(["a quoted line"]));
    assert_eq!(md["code"].as_array().unwrap().len(), 1);
    assert!(
        md["code"][0]
            .as_str()
            .unwrap()
            .starts_with("let wide = \"0123")
    );
    assert_eq!(
        md["links"],
        json!(["https://example.com/streams", "https://example.com/more"])
    );
    assert_eq!(md["elements"], json!([]), "elements Markdown does not make");
    assert_eq!(
        md["last"],
        "Not a link: [click](javascript:alert(1)) and <img src=x onerror=alert(1)> stay text."
    );
    // 360 px: nothing scrolls sideways, even with a long code line; the list is behind a button.
    let narrow = &seen["narrow"];
    assert!(
        narrow["scroll_width"].as_u64().unwrap() <= 360,
        "horizontal scroll at 360 px: {narrow}"
    );
    assert_eq!(narrow["sidebar_visible"], false);
    assert_eq!(narrow["sidebar_opens"], true);
    for shot in ["markdown", "narrow", "narrow-sidebar"] {
        assert_png(&screenshots, shot);
    }

    for stopped in seen["stopped"].as_array().unwrap() {
        let text = stopped["text"].as_str().unwrap();
        assert!(text.ends_with("Stopped."), "{stopped}");
        assert_eq!(stopped["stop_hidden"], true, "{stopped}");
    }
    // A dropped socket: the answer says so, the page reconnects, and the next message goes through.
    let cut = &seen["cut"];
    let note = cut["note"].as_str().unwrap();
    assert!(
        note.starts_with("The connection dropped before this answer was finished"),
        "{cut}"
    );
    assert!(
        cut["status"]
            .as_str()
            .unwrap()
            .starts_with("The connection dropped. Trying again in"),
        "{cut}"
    );
    assert_eq!(cut["sockets"], 2, "one reconnection: {cut}");
    assert!(!cut["after"].as_str().unwrap().is_empty(), "{cut}");

    // All three model calls (Stop, Esc, the drop) were cut off upstream, not left to run.
    assert!(
        fake.wait_for(std::time::Duration::from_secs(5), |f| f.aborted() == 3)
            .await,
        "aborted {} of {} calls",
        fake.aborted(),
        fake.calls()
    );

    // Bob's third message in a minute is refused before the model, with a countdown that moves.
    let limited = seen["limited"].as_array().unwrap();
    assert!(
        limited[2]
            .as_str()
            .unwrap()
            .contains("faster than your limit allows"),
        "{limited:?}"
    );
    assert_eq!(
        fake.calls(),
        7,
        "the refused message never reached the model"
    );
    let countdown = seen["countdown"].as_array().unwrap();
    let seconds = |v: &Value| -> u64 {
        let text = v.as_str().unwrap();
        text.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no seconds in {text:?}"))
    };
    assert!(
        seconds(&countdown[1]) < seconds(&countdown[0]),
        "{countdown:?}"
    );
}

#[tokio::test]
async fn the_browser_app_signs_in_with_oidc_and_pkce_and_renews_before_expiry() {
    let key = TestKey::new("k1", "rsa-1", Algorithm::RS256).unwrap();
    let issuer = FakeIssuer::start(&[&key]).await.unwrap();
    // Tokens of 66 s: the page renews a minute before expiry, so 6 s in.
    let oauth = FakeOAuth::start(&issuer, key, "alice", 66).await.unwrap();
    let auth = AuthSettings {
        issuers: vec![issuer.settings(&["RS256"])],
        ..AuthSettings::default()
    };
    let (authorize_url, token_url) = (oauth.authorize_url(), oauth.token_url());
    let gw = Gateway::builder()
        .model(Arc::new(MockProvider::new(MockSettings::unpaced())))
        .verifier(Verifier::new(&auth, None).unwrap())
        .config(|c| {
            c.web.oidc = Some(OidcSettings {
                client_id: CLIENT_ID.into(),
                authorize_url,
                token_url,
                scopes: vec!["openid".into(), "chat".into()],
                name: "Example".into(),
            });
        })
        .start()
        .await
        .unwrap();
    let seen = browser("oidc", json!({"base": gw.url("/")})).await;

    assert_eq!(seen["button"], "Sign in with Example");
    assert_eq!(seen["who"], "alice");
    let url = seen["url"].as_str().unwrap();
    assert!(!url.contains("code=") && !url.contains("state="), "{url}");
    assert_eq!(
        oauth.redeemed(),
        1,
        "the code was traded once, with its PKCE verifier"
    );
    assert!(oauth.renewed() >= 1, "the token was renewed");
    assert_eq!(seen["renewed"], true);
    assert!(
        seen["auth_frame"]["expires_at"].as_u64().is_some(),
        "{seen}"
    );
    assert!(
        seen["answer"]
            .as_str()
            .unwrap()
            .starts_with("You said: Hello after the renewal"),
        "{seen}"
    );
    // The tokens live in this tab's storage, never in a cookie.
    assert_eq!(
        seen["in_storage"],
        json!(["nagare.model", "nagare.refresh", "nagare.token"])
    );
    assert_eq!(seen["cookies"], 0);
}
