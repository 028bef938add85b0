//! `deploy/template.yaml` and the code cannot drift apart: every Lambda binary has a function and
//! every function a binary; each function's environment loads as the binary's config (no unknown
//! key, no bad value); the tables it names are declared with the keys, index and TTL the stores
//! use; the WebSocket API routes every client action; the worker's queue reports partial batch
//! failures and dead-letters; and each function may reach only what it uses. (tests/run.sh lints
//! the template with cfn-lint before this runs.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nagare_gateway::config::{self, Config, Overrides};
use nagare_gateway::store::{StoreKind, TableSpec, table_specs};
use nagare_gateway::tasks::QueueKind;
use nagare_gateway::wiring::table_names;
use nagare_gateway::ws::frames::ACTIONS;
use nagare_tests::{INSTALL_PYTHON, python};
use serde_json::{Value, json};

/// The template, short-form intrinsics in long form, parsed by cfn-lint's own decoder.
pub(crate) fn template() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(python())
        .arg(root.join("tests/python/template_json.py"))
        .arg(root.join("deploy/template.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; {INSTALL_PYTHON}", python().display()));
    assert!(
        out.status.success(),
        "the template does not parse: {}; {INSTALL_PYTHON}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn resources_of<'a>(t: &'a Value, kind: &str) -> BTreeMap<&'a str, &'a Value> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(name, r)| (name.as_str(), r))
        .collect()
}

/// A value as the function would see it, with parameters at their defaults (or a sample for
/// those without), a resource's `Ref` as `ref:Name`, and other intrinsics as a marker.
fn resolve(t: &Value, v: &Value) -> String {
    let parameter = |name: &str| -> Option<String> {
        let p = t["Parameters"].get(name)?;
        Some(match (&p["Default"], name) {
            (Value::String(d), _) => d.clone(),
            (Value::Number(d), _) => d.to_string(),
            (_, "JwtIssuer") => "https://issuer.example.com".into(),
            (_, "CallbackSecret") => "s".repeat(32),
            _ => "sample".into(),
        })
    };
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            if let Some(name) = v["Ref"].as_str() {
                return parameter(name).unwrap_or_else(|| format!("ref:{name}"));
            }
            if let Some(text) = v["Fn::Sub"].as_str() {
                let mut out = text.to_owned();
                while let Some(start) = out.find("${") {
                    let end = start + out[start..].find('}').unwrap();
                    let name = &out[start + 2..end];
                    let value = parameter(name).unwrap_or_else(|| format!("sub-{name}"));
                    out.replace_range(start..=end, &value);
                }
                return out;
            }
            format!("intrinsic:{v}")
        }
    }
}

/// Each function's environment (the globals, then its own) and the config it loads into.
fn function_configs(t: &Value) -> BTreeMap<String, (BTreeMap<String, String>, Config)> {
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    resources_of(t, "AWS::Serverless::Function")
        .into_iter()
        .map(|(name, f)| {
            let own = &f["Properties"]["Environment"]["Variables"];
            let mut env = BTreeMap::new();
            for vars in [globals, own] {
                for (k, v) in vars.as_object().into_iter().flatten() {
                    env.insert(k.clone(), resolve(t, v));
                }
            }
            let config = config::load(None, &env, &Overrides::default())
                .unwrap_or_else(|e| panic!("{name}: its environment is not a valid config: {e}"));
            (name.to_owned(), (env, config))
        })
        .collect()
}

/// The binary a function runs.
fn binary(f: &Value) -> &str {
    assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
    f["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap()
}

fn function<'a>(t: &'a Value, bin: &str) -> (&'a str, &'a Value) {
    resources_of(t, "AWS::Serverless::Function")
        .into_iter()
        .find(|(_, f)| binary(f) == bin)
        .unwrap_or_else(|| panic!("no function runs {bin}"))
}

#[test]
fn every_lambda_binary_has_a_function_and_every_function_a_binary() {
    let t = template();
    let bins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src/bin");
    let lambda_binaries: BTreeSet<String> = std::fs::read_dir(bins)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        // `nagare` is the self-hosted server and CLI, not a Lambda function.
        .filter(|name| name != "nagare")
        .collect();
    let functions = resources_of(&t, "AWS::Serverless::Function");
    let deployed: BTreeSet<String> = functions.values().map(|f| binary(f).to_owned()).collect();
    assert_eq!(deployed, lambda_binaries);
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"], json!(["arm64"]));
}

#[test]
fn every_function_environment_loads_as_its_config() {
    let t = template();
    let configs = function_configs(&t);
    assert!(configs.len() >= 3, "{:?}", configs.keys());
    for (name, (_, config)) in &configs {
        assert!(
            !config.auth.issuers.is_empty(),
            "{name}: no issuer, so it would run in dev mode"
        );
    }
    // The chat functions call Bedrock, keep their state in DynamoDB and queue tasks in SQS.
    for bin in ["nagare-ws", "nagare-worker", "nagare-http", "nagare-stream"] {
        let (name, _) = function(&t, bin);
        let config = &configs[name].1;
        assert_eq!(
            config.provider,
            nagare_gateway::config::ProviderKind::Bedrock,
            "{name}"
        );
        assert_eq!(config.store.kind, StoreKind::Dynamodb, "{name}");
        assert_eq!(config.tasks.queue, QueueKind::Sqs, "{name}");
        assert_eq!(config.tasks.queue_url.as_deref(), Some("ref:TaskQueue"));
    }
    // The knowledge bases the stack is given, in the form its parameter documents, load too.
    let (ws, _) = function(&t, "nagare-ws");
    let (env, config) = &configs[ws];
    assert_eq!(env["NAGARE__KNOWLEDGE__BEDROCK__BASES"], "[]");
    assert!(config.knowledge.bedrock.bases.is_empty());
    let described = t["Parameters"]["KnowledgeBases"]["Description"]
        .as_str()
        .unwrap();
    let start = described.find("[{").unwrap();
    let end = described.find("}]").unwrap() + 2;
    let mut env = env.clone();
    env.insert(
        "NAGARE__KNOWLEDGE__BEDROCK__BASES".into(),
        described[start..end].to_owned(),
    );
    let config = config::load(None, &env, &Overrides::default()).unwrap();
    let bases = &config.knowledge.bedrock.bases;
    assert_eq!(bases.len(), 1, "{bases:?}");
    assert_eq!(
        (bases[0].name.as_str(), bases[0].id.as_str()),
        ("handbook", "KB12345678")
    );
    let (worker, _) = function(&t, "nagare-worker");
    assert!(
        configs[worker].1.tasks.callback_secret.is_some(),
        "nagare-worker signs callbacks"
    );
    for bin in ["nagare-http", "nagare-stream"] {
        let (name, _) = function(&t, bin);
        let config = &configs[name].1;
        assert!(
            config.tasks.callback_secret.is_none(),
            "{name} signs nothing"
        );
        assert_eq!(
            config.data_dir,
            Path::new("/tmp"),
            "{name}: Lambda's writable dir"
        );
    }
}

/// The `AWS::DynamoDB::Table` declaration a spec needs.
fn declared(spec: &TableSpec) -> Value {
    let key = |k: &nagare_gateway::store::Key, kind: &str| json!({"AttributeName": k.name, "KeyType": kind});
    let mut attributes = vec![spec.partition];
    let mut schema = vec![key(&spec.partition, "HASH")];
    if let Some(sort) = &spec.sort {
        attributes.push(*sort);
        schema.push(key(sort, "RANGE"));
    }
    let mut p = json!({"BillingMode": "PAY_PER_REQUEST", "KeySchema": schema});
    if !spec.indexes.is_empty() {
        let mut indexes = Vec::new();
        for (index, partition, sort) in &spec.indexes {
            for attribute in [*partition, *sort] {
                if !attributes.contains(&attribute) {
                    attributes.push(attribute);
                }
            }
            indexes.push(json!({
                "IndexName": index,
                "KeySchema": [key(partition, "HASH"), key(sort, "RANGE")],
                "Projection": {"ProjectionType": "ALL"},
            }));
        }
        p["GlobalSecondaryIndexes"] = json!(indexes);
    }
    p["AttributeDefinitions"] = attributes
        .iter()
        .map(|a| json!({"AttributeName": a.name, "AttributeType": a.kind.letter()}))
        .collect();
    if let Some(ttl) = spec.ttl {
        p["TimeToLiveSpecification"] = json!({"AttributeName": ttl, "Enabled": true});
    }
    p
}

#[test]
fn the_tables_the_functions_name_are_declared_as_the_stores_use_them() {
    let t = template();
    let tables = resources_of(&t, "AWS::DynamoDB::Table");
    let mut checked = BTreeSet::new();
    for (name, (_, config)) in function_configs(&t) {
        if config.store.kind != StoreKind::Dynamodb {
            continue;
        }
        for spec in table_specs(&table_names(&config)) {
            let Some(resource) = spec.name.strip_prefix("ref:") else {
                // A table this function does not use keeps its default name; it must not be
                // one the stack creates under another name.
                continue;
            };
            let table = tables
                .get(resource)
                .unwrap_or_else(|| panic!("{name} names {resource}, which is not a table"));
            let p = &table["Properties"];
            let want = declared(&spec);
            for (field, value) in want.as_object().unwrap() {
                assert_eq!(&p[field], value, "{resource}.{field}");
            }
            checked.insert(resource.to_owned());
        }
    }
    let all: BTreeSet<String> = tables.keys().map(|k| (*k).to_owned()).collect();
    assert_eq!(
        checked, all,
        "a table no function uses, or one never checked"
    );
    let conversations = &tables["ConversationsTable"];
    assert_eq!(
        conversations["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(conversations["DeletionPolicy"], "Retain");
}

#[test]
fn the_websocket_api_routes_every_action_behind_the_authorizer() {
    let t = template();
    let routes: BTreeMap<String, &Value> = resources_of(&t, "AWS::ApiGatewayV2::Route")
        .into_values()
        .map(|r| (r["Properties"]["RouteKey"].as_str().unwrap().to_owned(), r))
        .collect();
    let want: BTreeSet<String> = ACTIONS
        .iter()
        .copied()
        .chain(["$connect", "$disconnect", "$default"])
        .map(str::to_owned)
        .collect();
    assert_eq!(routes.keys().cloned().collect::<BTreeSet<_>>(), want);
    let api = resources_of(&t, "AWS::ApiGatewayV2::Api");
    let api = api.values().next().unwrap();
    assert_eq!(api["Properties"]["ProtocolType"], "WEBSOCKET");
    assert_eq!(
        api["Properties"]["RouteSelectionExpression"],
        "$request.body.action"
    );

    let connect = &routes["$connect"]["Properties"];
    assert_eq!(connect["AuthorizationType"], "CUSTOM");
    let authorizer_name = connect["AuthorizerId"]["Ref"].as_str().unwrap();
    let authorizer = &t["Resources"][authorizer_name]["Properties"];
    assert_eq!(authorizer["AuthorizerType"], "REQUEST");
    assert_eq!(
        authorizer["IdentitySource"],
        json!(["route.request.querystring.token"])
    );
    let (authorizer_fn, _) = function(&t, "nagare-authorizer");
    assert!(
        authorizer["AuthorizerUri"]
            .to_string()
            .contains(authorizer_fn),
        "the authorizer must run nagare-authorizer"
    );
    // Every route reaches nagare-ws.
    let (ws_fn, _) = function(&t, "nagare-ws");
    for (key, route) in &routes {
        let target = resolve(&t, &route["Properties"]["Target"]);
        let integration = target.trim_start_matches("integrations/");
        let integration = integration.trim_start_matches("sub-");
        let uri = t["Resources"][integration]["Properties"]["IntegrationUri"].to_string();
        assert!(uri.contains(ws_fn), "{key} does not reach nagare-ws: {uri}");
    }
}

#[test]
fn the_worker_reports_partial_failures_and_its_queue_dead_letters() {
    let t = template();
    let (_, worker) = function(&t, "nagare-worker");
    let events = worker["Properties"]["Events"].as_object().unwrap();
    let sqs = events.values().find(|e| e["Type"] == "SQS").unwrap();
    assert_eq!(
        sqs["Properties"]["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(sqs["Properties"]["Queue"]["Fn::GetAtt"][0], "TaskQueue");
    let queue = &t["Resources"]["TaskQueue"]["Properties"];
    assert_eq!(
        queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0],
        "TaskDeadLetterQueue"
    );
}

/// Every IAM statement of a function, with SAM's policy templates named by their key.
fn permissions(f: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for policy in f["Properties"]["Policies"].as_array().into_iter().flatten() {
        // A conditional policy (`!If [Condition, policy, AWS::NoValue]`) counts as granted.
        let policy = match policy.get("Fn::If") {
            Some(branches) => &branches[1],
            None => policy,
        };
        for (kind, body) in policy.as_object().unwrap() {
            if kind == "Statement" {
                for s in body.as_array().unwrap() {
                    let actions = match &s["Action"] {
                        Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
                        a => vec![a.as_str().unwrap()],
                    };
                    for action in actions {
                        out.push((action.to_owned(), s["Resource"].to_string()));
                    }
                }
            } else {
                out.push((kind.clone(), body.to_string()));
            }
        }
    }
    out
}

#[test]
fn each_function_may_reach_only_what_it_uses() {
    let t = template();
    for (name, f) in resources_of(&t, "AWS::Serverless::Function") {
        for (action, resource) in permissions(f) {
            assert!(
                !resource.contains("\"*\"") && !action.ends_with(":*"),
                "{name}: {action} on {resource} is wider than it needs"
            );
        }
    }
    let (_, ws) = function(&t, "nagare-ws");
    assert_eq!(
        ws["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"], 0,
        "a retried generation would stream its answer twice"
    );
    let ws = permissions(ws);
    let has = |perms: &[(String, String)], action: &str, on: &str| {
        perms.iter().any(|(a, r)| a == action && r.contains(on))
    };
    assert!(has(
        &ws,
        "execute-api:ManageConnections",
        "${WebSocketApi}/"
    ));
    assert!(has(
        &ws,
        "bedrock:InvokeModelWithResponseStream",
        "${FastModelId}"
    ));
    assert!(has(&ws, "lambda:InvokeFunction", "${AWS::StackName}-ws"));
    // Every function that runs chats may retrieve from exactly the stack's knowledge bases.
    for bin in ["nagare-ws", "nagare-worker", "nagare-http", "nagare-stream"] {
        let (name, f) = function(&t, bin);
        let retrieve: Vec<_> = permissions(f)
            .into_iter()
            .filter(|(a, _)| a.starts_with("bedrock:Retrieve"))
            .collect();
        assert_eq!(
            retrieve,
            [(
                "bedrock:Retrieve".to_owned(),
                json!({"Ref": "KnowledgeBaseArns"}).to_string()
            )],
            "{name}"
        );
        let conditional = f["Properties"]["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Fn::If"][0] == "HasKnowledgeBases");
        assert!(
            conditional,
            "{name}: granted only when there are knowledge bases"
        );
    }
    for bin in ["nagare-authorizer", "nagare-sweep"] {
        let (name, f) = function(&t, bin);
        assert!(
            !permissions(f).iter().any(|(a, _)| a == "bedrock:Retrieve"),
            "{name} runs no chats"
        );
    }
    assert!(has(&ws, "DynamoDBCrudPolicy", "ConnectionsTable"));
    let (_, authorizer) = function(&t, "nagare-authorizer");
    assert!(
        permissions(authorizer).is_empty(),
        "the authorizer needs no AWS access"
    );
    let (_, worker) = function(&t, "nagare-worker");
    let worker = permissions(worker);
    assert!(has(&worker, "SQSPollerPolicy", "TaskQueue"));
    assert!(
        has(&worker, "SQSSendMessagePolicy", "TaskQueue"),
        "the worker puts a task refused by a limit back as a new message"
    );
    assert!(has(&worker, "DynamoDBCrudPolicy", "TasksTable"));
    assert!(has(&worker, "DynamoDBReadPolicy", "ConnectionsTable"));
    assert!(!has(&worker, "DynamoDBCrudPolicy", "ConnectionsTable"));
    for bin in ["nagare-http", "nagare-stream"] {
        let (_, f) = function(&t, bin);
        let f = permissions(f);
        assert!(has(&f, "SQSSendMessagePolicy", "TaskQueue"), "{bin}");
        assert!(
            !has(&f, "SQSPollerPolicy", "TaskQueue"),
            "{bin} runs no tasks"
        );
        assert!(has(&f, "DynamoDBReadPolicy", "ConnectionsTable"), "{bin}");
        assert!(
            !f.iter().any(|(a, _)| a == "execute-api:ManageConnections"),
            "{bin} pushes nothing"
        );
    }
}

#[test]
fn the_stream_function_streams_through_a_function_url() {
    let t = template();
    let (_, stream) = function(&t, "nagare-stream");
    let url = &stream["Properties"]["FunctionUrlConfig"];
    assert_eq!(url["InvokeMode"], "RESPONSE_STREAM");
    assert_eq!(url["AuthType"], "NONE", "the function verifies JWTs itself");
}

#[tokio::test]
async fn every_http_api_route_is_a_route_of_the_router_behind_the_jwt_authorizer() {
    use std::sync::Arc;

    use nagare_gateway::provider::{MockProvider, MockSettings};
    use nagare_tests::Gateway;

    let t = template();
    let (_, http) = function(&t, "nagare-http");
    let api = &t["Resources"]["HttpApi"]["Properties"]["Auth"];
    assert_eq!(api["DefaultAuthorizer"], "Jwt");
    let jwt = &api["Authorizers"]["Jwt"]["JwtConfiguration"];
    assert_eq!(jwt["issuer"]["Ref"], "JwtIssuer");

    let gw = Gateway::start(
        Arc::new(MockProvider::new(MockSettings::default())),
        "mock",
        &[],
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let events = http["Properties"]["Events"].as_object().unwrap();
    let mut paths = BTreeSet::new();
    for (name, event) in events {
        assert_eq!(event["Type"], "HttpApi", "{name}");
        let p = &event["Properties"];
        let path = p["Path"].as_str().unwrap().replace("{id}", "x");
        let method = reqwest::Method::from_bytes(p["Method"].as_str().unwrap().as_bytes()).unwrap();
        let public = path == "/healthz";
        if p["Auth"]["Authorizer"] == "NONE" {
            // Only health is public; the Anthropic routes take the token as x-api-key, which
            // the API's authorizer does not read, so the function alone verifies it.
            assert!(
                public || path.starts_with("/v1/messages"),
                "{name}: {path} is open"
            );
        }
        let status = client
            .request(method, gw.url(&path))
            .send()
            .await
            .unwrap()
            .status();
        // Without a token, a route of the router answers 401; one it lacks would be 404 or 405.
        let want = if public { 200 } else { 401 };
        assert_eq!(status.as_u16(), want, "{name}: {path}");
        paths.insert(p["Path"].as_str().unwrap().to_owned());
    }
    for path in [
        "/v1/chat",
        "/v1/tasks",
        "/v1/conversations",
        "/v1/chat/completions",
        "/v1/models",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ] {
        assert!(paths.contains(path), "the HTTP API does not route {path}");
    }
}

/// Every state of a definition, those inside `Parallel` branches included.
fn states(definition: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (name, state) in definition["States"].as_object().unwrap() {
        out.push((name.clone(), state.clone()));
        for branch in state["Branches"].as_array().into_iter().flatten() {
            out.extend(states(branch));
        }
    }
    out
}

fn retries(state: &Value, error: &str) -> bool {
    state["Retry"].as_array().into_iter().flatten().any(|r| {
        r["ErrorEquals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == error)
    })
}

#[test]
fn the_state_machines_fit_their_functions_models_and_permissions() {
    use nagare_gateway::workflow::{Extracted, WorkflowSettings, combine};

    let t = template();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let machines = resources_of(&t, "AWS::Serverless::StateMachine");
    assert_eq!(
        machines.len(),
        2,
        "the document pipeline and the parallel analysis"
    );
    let extracted = serde_json::to_value(Extracted {
        extracted_text: String::new(),
        content_type: String::new(),
        chars: 0,
        truncated: false,
    })
    .unwrap();
    for (name, machine) in machines {
        let p = &machine["Properties"];
        let file = deploy.join(p["DefinitionUri"].as_str().unwrap());
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", file.display()));
        let definition: Value = serde_json::from_str(&text).unwrap();

        // Every ${Var} in the definition is substituted, and nothing else is.
        let used: BTreeSet<&str> = text
            .split("${")
            .skip(1)
            .map(|rest| &rest[..rest.find('}').unwrap()])
            .collect();
        let given: BTreeSet<&str> = p["DefinitionSubstitutions"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(used, given, "{name}");
        let policies = p["Policies"].to_string();

        for (state, s) in states(&definition) {
            if s["Type"] != "Task" {
                continue;
            }
            let resource = s["Resource"].as_str().unwrap();
            if resource == "arn:aws:states:::bedrock:invokeModel" {
                assert!(retries(&s, "Bedrock.ThrottlingException"), "{name}.{state}");
                let var = s["Parameters"]["ModelId"].as_str().unwrap();
                let var = var.trim_start_matches("${").trim_end_matches('}');
                let parameter = p["DefinitionSubstitutions"][var]["Ref"].as_str().unwrap();
                assert!(
                    policies.contains(&format!("foundation-model/${{{parameter}}}")),
                    "{name}.{state}: may not invoke {parameter}"
                );
            } else {
                // A Nagare function: one of ours, invocable, retried when Lambda throttles.
                assert!(
                    retries(&s, "Lambda.TooManyRequestsException"),
                    "{name}.{state}"
                );
                let var = resource.trim_start_matches("${").trim_end_matches('}');
                let function = p["DefinitionSubstitutions"][var]["Fn::GetAtt"][0]
                    .as_str()
                    .unwrap();
                let bin = binary(&t["Resources"][function]);
                assert!(bin.starts_with("nagare-"), "{name}.{state}: {bin}");
                assert!(
                    policies.contains(function),
                    "{name} may not invoke {function}"
                );
            }
        }

        // What the definition reads from the functions is what they write, and the reverse.
        if text.contains("ExtractTextFunctionArn") {
            assert!(text.contains("$.document.extractedText"));
            assert!(extracted.get("extractedText").is_some());
            assert!(text.contains("$.document.truncated"));
            assert!(extracted.get("truncated").is_some());
        }
        if text.contains("CombineResultsFunctionArn") {
            let branches: Vec<Value> = states(&definition)
                .into_iter()
                .filter_map(|(_, s)| s.get("ResultSelector").cloned())
                .map(|selector| {
                    let key = selector.as_object().unwrap().keys().next().unwrap().clone();
                    json!({ key.trim_end_matches(".$"): "positive: a, b" })
                })
                .collect();
            combine(Value::Array(branches), &WorkflowSettings::default())
                .unwrap_or_else(|e| panic!("{name}: the branches' outputs do not combine: {e}"));
        }
    }
}

#[test]
fn the_uploads_bucket_is_private_and_only_the_chat_functions_and_the_sweep_use_it() {
    let t = template();
    let bucket = &t["Resources"]["UploadsBucket"]["Properties"];
    let blocked = &bucket["PublicAccessBlockConfiguration"];
    for field in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(blocked[field], true, "{field}");
    }
    let encryption = &bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(
        encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );
    let rules = bucket["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["Prefix"] == "incoming/" && r["ExpirationInDays"].as_u64().is_some()),
        "bytes of uploads never used expire: {rules:?}"
    );
    let configs = function_configs(&t);
    let chat = ["nagare-ws", "nagare-worker", "nagare-http", "nagare-stream"];
    for (name, f) in resources_of(&t, "AWS::Serverless::Function") {
        let perms = permissions(f);
        let on_bucket: Vec<&str> = perms
            .iter()
            .filter(|(_, r)| r.contains("UploadsBucket"))
            .map(|(a, _)| a.as_str())
            .collect();
        if chat.contains(&binary(f)) {
            assert_eq!(
                on_bucket,
                [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:ListBucket"
                ],
                "{name}"
            );
            let config = &configs[name].1;
            assert_eq!(config.uploads.store, nagare_gateway::uploads::BlobKind::S3);
            assert_eq!(config.uploads.bucket, "ref:UploadsBucket", "{name}");
            assert!(
                perms
                    .iter()
                    .any(|(a, r)| a == "DynamoDBCrudPolicy" && r.contains("UploadsTable")),
                "{name}"
            );
        } else if binary(f) == "nagare-sweep" {
            assert_eq!(on_bucket, ["s3:DeleteObject", "s3:ListBucket"], "{name}");
            let events = f["Properties"]["Events"].as_object().unwrap();
            assert!(
                events.values().any(|e| e["Type"] == "Schedule"),
                "{name} runs on a schedule"
            );
        } else {
            assert!(on_bucket.is_empty(), "{name} does not use attachments");
        }
    }
}
