#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The embedded store through the REST API: questions whose answers live in known pages of
//! `docs/`, replacing and deleting documents, tenant isolation, sharing with every tenant, PDFs,
//! the command line, and every bad input.

use nagare_tests::{Gateway, authed_client, dev_token, tenant_token};
use serde_json::json;

use super::{ask, gateway, post, put, put_docs};

#[tokio::test]
async fn questions_find_the_pages_of_nagares_own_docs_that_answer_them() {
    let gw = gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let (status, created) = post(&gw, &alice, "/v1/knowledge-bases", json!({"name": "docs"})).await;
    assert_eq!(status, 201, "{created}");
    let (status, _) = post(&gw, &alice, "/v1/knowledge-bases", json!({"name": "docs"})).await;
    assert_eq!(status, 200, "creating it again is fine");
    let pages = put_docs(&gw, &alice).await;
    let (_, listed) = gw
        .get_json(&alice, "/v1/knowledge-bases/docs/documents")
        .await;
    assert_eq!(listed["documents"].as_array().unwrap().len(), pages.len());
    let api = listed["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["document_id"] == "api")
        .expect("docs/api.md is listed");
    assert_eq!(api["title"], "API", "the first heading titles a page");

    let questions = [
        (
            "How do I upload an image and PUT its bytes to the signed URL?",
            "attachments",
        ),
        (
            "How do I build and deploy the SAM stack with Cargo Lambda?",
            "deploy-aws",
        ),
        (
            "What are the requests per minute, tokens per day and daily budget limits?",
            "limits",
        ),
        ("How do I verify the signature of a task callback?", "tasks"),
        (
            "Which close codes does the WebSocket use for a slow consumer?",
            "websocket",
        ),
        ("How do gRPC deadlines and reflection work?", "grpc"),
    ];
    for (question, page) in questions {
        let top = ask(&gw, &alice, question).await;
        assert!(top.iter().any(|d| d == page), "{question}: {top:?}");
    }
    let (status, found) = post(
        &gw,
        &alice,
        "/v1/knowledge-bases/docs/retrieve",
        json!({"question": "presigned S3 PUT", "results": 1}),
    )
    .await;
    assert_eq!(status, 200);
    let best = &found["passages"][0];
    assert_eq!(best["document_id"], "attachments", "{best}");
    assert_eq!(best["uri"], "docs/attachments.md");
    assert!(best["id"].as_str().unwrap().starts_with("attachments#"));
    assert!(best["score"].as_f64().unwrap() > 0.0);
    assert!(
        best["text"].as_str().unwrap().contains("presigned"),
        "{best}"
    );

    // Replaced and deleted documents change what is found.
    let (status, _) = put(
        &gw,
        &alice,
        "/v1/knowledge-bases/docs/documents/attachments",
        "text/plain",
        "Nothing about files here any more.",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        !ask(&gw, &alice, "presigned S3 PUT")
            .await
            .contains(&"attachments".to_owned())
    );
    let deleted = alice
        .delete(gw.url("/v1/knowledge-bases/docs/documents/limits"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let top = ask(
        &gw,
        &alice,
        "requests per minute tokens per day daily budget",
    )
    .await;
    assert!(!top.contains(&"limits".to_owned()), "{top:?}");
}

#[tokio::test]
async fn another_tenants_knowledge_base_is_not_found_on_any_route() {
    let gw = gateway().await;
    let alice = authed_client(&tenant_token("alice", Some("acme"), &["chat"]));
    let bob = authed_client(&tenant_token("bob", Some("globex"), &["chat"]));
    let carol = authed_client(&tenant_token("carol", Some("acme"), &["chat"]));
    assert_eq!(
        post(&gw, &alice, "/v1/knowledge-bases", json!({"name": "hr"}))
            .await
            .0,
        201
    );
    let path = "/v1/knowledge-bases/hr/documents/leave";
    assert_eq!(
        put(&gw, &alice, path, "text/plain", "Leave is 30 days.")
            .await
            .0,
        200
    );
    // Same tenant, another user: a tenant's knowledge base is the tenant's.
    assert_eq!(ask_status(&gw, &carol, "hr").await, 200);
    assert_eq!(ask_status(&gw, &bob, "hr").await, 404);
    assert_eq!(
        put(&gw, &bob, path, "text/plain", "Leave is 1 day.")
            .await
            .0,
        404
    );
    let (status, _) = gw.get_json(&bob, "/v1/knowledge-bases/hr/documents").await;
    assert_eq!(status, 404);
    let (_, mine) = gw.get_json(&bob, "/v1/knowledge-bases").await;
    assert_eq!(mine["knowledge_bases"], json!([]));
    let deleted = bob
        .delete(gw.url("/v1/knowledge-bases/hr"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 404);
    let deleted = bob.delete(gw.url(path)).send().await.unwrap();
    assert_eq!(deleted.status(), 404);
    // Bob may have his own "hr", which shares nothing with Acme's.
    assert_eq!(
        post(&gw, &bob, "/v1/knowledge-bases", json!({"name": "hr"}))
            .await
            .0,
        201
    );
    let (_, found) = post(
        &gw,
        &bob,
        "/v1/knowledge-bases/hr/retrieve",
        json!({"question": "leave days"}),
    )
    .await;
    assert_eq!(found["passages"], json!([]));
}

/// The status of a retrieval from `kb` as `client`.
async fn ask_status(gw: &Gateway, client: &reqwest::Client, kb: &str) -> u16 {
    post(
        gw,
        client,
        &format!("/v1/knowledge-bases/{kb}/retrieve"),
        json!({"question": "how many days of leave?"}),
    )
    .await
    .0
}

#[tokio::test]
async fn bad_input_gets_its_row_of_the_error_table_and_changes_nothing() {
    let gw = gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    for name in ["../etc", "a/b", ".hidden", ""] {
        let (status, _) = post(&gw, &alice, "/v1/knowledge-bases", json!({"name": name})).await;
        assert_eq!(status, 400, "{name:?}");
    }
    assert_eq!(
        post(&gw, &alice, "/v1/knowledge-bases", json!({"name": "kb"}))
            .await
            .0,
        201
    );
    let doc = |id: &str| format!("/v1/knowledge-bases/kb/documents/{id}");
    let cases: [(String, &str, Vec<u8>, u16, &str); 5] = [
        (
            doc("empty"),
            "text/plain",
            b"  \n ".to_vec(),
            400,
            "no text",
        ),
        (
            doc("pic"),
            "image/png",
            b"\x89PNG".to_vec(),
            400,
            "not a text document",
        ),
        (doc("bin"), "text/plain", vec![0xC3, 0x28], 400, "not UTF-8"),
        (
            doc("big"),
            "text/plain",
            vec![b'a'; 3 * 1024 * 1024],
            413,
            "larger than the limit",
        ),
        (doc(".x"), "text/plain", b"hi".to_vec(), 400, "document_id"),
    ];
    for (path, content_type, body, status, rule) in cases {
        let (got, answer) = put(&gw, &alice, &path, content_type, body).await;
        assert_eq!(got, status, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(rule), "{path}: {message}");
    }
    let (_, listed) = gw
        .get_json(&alice, "/v1/knowledge-bases/kb/documents")
        .await;
    assert_eq!(listed["documents"], json!([]), "nothing was kept");
    // A document above the chat body limit but within the document limit is taken.
    let long = "A line about gateways and streams.\n\n".repeat(10_000);
    assert_eq!(
        put(&gw, &alice, &doc("long"), "text/plain", long).await.0,
        200
    );
    for (body, status) in [
        (json!({"question": "x", "results": 0}), 400),
        (json!({"question": "x", "results": 21}), 400),
        (json!({"question": ""}), 400),
        (json!({"question": "x", "filter": {}}), 400),
        (
            json!({"question": r#"streams" OR NEAR(a b) * -x AND col:y"#}),
            200,
        ),
    ] {
        let (got, answer) =
            post(&gw, &alice, "/v1/knowledge-bases/kb/retrieve", body.clone()).await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (status, _) = post(
        &gw,
        &alice,
        "/v1/knowledge-bases/nope/retrieve",
        json!({"question": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn nagare_kb_ingest_fills_a_knowledge_base_beside_a_running_server() {
    let gw = gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    let extra = nagare_tests::TempDir::new("kb-ingest").unwrap();
    std::fs::create_dir_all(extra.path().join("notes")).unwrap();
    std::fs::write(
        extra.path().join("notes/tea.txt"),
        "Green tea is steeped at 80 degrees.",
    )
    .unwrap();
    std::fs::write(extra.path().join("logo.png"), b"\x89PNG").unwrap();
    std::fs::write(extra.path().join("empty.md"), "   ").unwrap();
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let out =
        std::process::Command::new(nagare_tests::fake_lambda::workspace_binary("nagare").unwrap())
            .args([
                "kb",
                "ingest",
                "--kb",
                "docs",
                "--tenant",
                "alice",
                "--data-dir",
            ])
            .arg(gw.data_dir())
            .arg(&docs)
            .arg(extra.path())
            .output()
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The empty file is refused, so the command reports failure; the rest went in.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("empty.md: refused: the document has no text"),
        "{stderr}"
    );
    assert!(stdout.contains("logo.png: skipped"), "{stdout}");
    assert!(stdout.contains(": notes.tea ("), "{stdout}");
    assert!(stdout.contains(": attachments ("), "{stdout}");
    // The running server sees them at once.
    assert_eq!(ask(&gw, &alice, "presigned S3 PUT").await[0], "attachments");
    assert_eq!(
        ask(&gw, &alice, "how hot for green tea?").await[0],
        "notes.tea"
    );
    // A knowledge base of another tenant is not this one.
    let bob = authed_client(&dev_token("bob", &["chat"]));
    assert_eq!(ask_status(&gw, &bob, "docs").await, 404);
}

#[tokio::test]
async fn an_operator_shares_knowledge_bases_read_only_with_every_tenant() {
    let gw = gateway().await;
    let operator = authed_client(&tenant_token(
        "ops",
        Some("operators"),
        &["chat", "knowledge:global"],
    ));
    let alice = authed_client(&tenant_token("alice", Some("acme"), &["chat"]));
    let bob = authed_client(&tenant_token("bob", Some("globex"), &["chat"]));
    let shared = "/v1/knowledge-bases?scope=global";
    assert_eq!(
        post(&gw, &operator, shared, json!({"name": "faq"})).await.0,
        201
    );
    let doc = "/v1/knowledge-bases/faq/documents/hours?scope=global&title=Opening%20hours";
    let text = "The help desk answers from 8:00 to 18:00 on working days.";
    assert_eq!(put(&gw, &operator, doc, "text/plain", text).await.0, 200);

    // Any tenant reads it with the scope; none may change it without the operator's scope.
    for client in [&alice, &bob] {
        let (status, found) = post(
            &gw,
            client,
            "/v1/knowledge-bases/faq/retrieve?scope=global",
            json!({"question": "When does the help desk answer?"}),
        )
        .await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found["passages"][0]["title"], "Opening hours");
        let (_, listed) = gw.get_json(client, shared).await;
        assert_eq!(listed["knowledge_bases"], json!([{"name": "faq"}]));
        let (_, own) = gw.get_json(client, "/v1/knowledge-bases").await;
        assert_eq!(
            own["knowledge_bases"],
            json!([]),
            "not one of the tenant's own"
        );
    }
    assert_eq!(ask_status(&gw, &bob, "faq").await, 404, "without the scope");
    let (status, refused) = post(&gw, &alice, shared, json!({"name": "mine"})).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("knowledge:global")
    );
    assert_eq!(put(&gw, &alice, doc, "text/plain", "Closed.").await.0, 403);
    for path in [
        "/v1/knowledge-bases/faq?scope=global",
        "/v1/knowledge-bases/faq/documents/hours?scope=global",
    ] {
        let deleted = alice.delete(gw.url(path)).send().await.unwrap();
        assert_eq!(deleted.status(), 403, "{path}");
    }
    let (status, _) = gw
        .get_json(&alice, "/v1/knowledge-bases?scope=everyone")
        .await;
    assert_eq!(status, 400);

    // A chat names it with the scope.
    let (status, events) = gw
        .stream_chat(
            &bob,
            &json!({"message": "When does the help desk answer?",
                    "knowledge_base": {"name": "faq", "scope": "global"}}),
        )
        .await;
    assert_eq!(status, 200, "{events:?}");
    let sources = events.iter().find(|e| e["type"] == "sources").unwrap();
    assert_eq!(sources["sources"][0]["title"], "Opening hours");

    // The operator's command line puts files there too.
    let dir = nagare_tests::TempDir::new("kb-global").unwrap();
    std::fs::write(
        dir.path().join("parking.txt"),
        "Visitors park in the north garage.",
    )
    .unwrap();
    let out =
        std::process::Command::new(nagare_tests::fake_lambda::workspace_binary("nagare").unwrap())
            .args(["kb", "ingest", "--kb", "faq", "--global", "--data-dir"])
            .arg(gw.data_dir())
            .arg(dir.path())
            .output()
            .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, found) = post(
        &gw,
        &alice,
        "/v1/knowledge-bases/faq/retrieve?scope=global",
        json!({"question": "Where do visitors park?", "results": 1}),
    )
    .await;
    assert_eq!(found["passages"][0]["document_id"], "parking", "{found}");
}

#[tokio::test]
async fn a_pdf_is_read_page_by_page_and_a_broken_one_is_refused() {
    let gw = gateway().await;
    let alice = authed_client(&dev_token("alice", &["chat"]));
    assert_eq!(
        post(
            &gw,
            &alice,
            "/v1/knowledge-bases",
            json!({"name": "manuals"})
        )
        .await
        .0,
        201
    );
    let pdf = nagare_tests::samples::pdf(3, "Green tea is steeped at 80 degrees for two minutes");
    let (status, info) = put(
        &gw,
        &alice,
        "/v1/knowledge-bases/manuals/documents/tea?title=Tea",
        "application/pdf",
        pdf,
    )
    .await;
    assert_eq!(status, 200, "{info}");
    let (_, found) = post(
        &gw,
        &alice,
        "/v1/knowledge-bases/manuals/retrieve",
        json!({"question": "How hot is green tea steeped?", "results": 1}),
    )
    .await;
    let text = found["passages"][0]["text"].as_str().unwrap();
    assert_eq!(
        text.matches("Green tea is steeped at 80 degrees").count(),
        3,
        "every page: {text}"
    );
    for (bytes, says) in [
        (b"%PDF-1.4 not really".to_vec(), "does not open"),
        (nagare_tests::samples::pdf(1, ""), "no text"),
    ] {
        let (status, answer) = put(
            &gw,
            &alice,
            "/v1/knowledge-bases/manuals/documents/broken",
            "application/pdf",
            bytes,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let (_, listed) = gw
        .get_json(&alice, "/v1/knowledge-bases/manuals/documents")
        .await;
    assert_eq!(listed["documents"].as_array().unwrap().len(), 1);
}
