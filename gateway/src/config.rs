//! Configuration: defaults, then an optional TOML file, then `NAGARE__SECTION__KEY` environment
//! variables, then command-line flags; validated once at start-up with messages naming the key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nagare_authorizer::AuthSettings;
use nagare_cache::CacheSettings;
use serde::Deserialize;

use crate::chat::RequestLimits;
use crate::error::StartupError;
use crate::grpc::GrpcSettings;
use crate::knowledge::KnowledgeSettings;
use crate::lambda::LambdaWsSettings;
use crate::limits::RateLimitSettings;
use crate::pipeline::{
    EmbeddingSettings, GuardrailRule, MemorySettings, ModelCatalog, PipelineOptions,
    PromptCacheSettings, RoutingSettings, check_guardrails,
};
use crate::provider::{BedrockSettings, MockSettings, UpstreamSettings};
use crate::store::StoreSettings;
use crate::tasks::TaskSettings;
use crate::tcp::{ConnectionSettings, Timeouts};
use crate::telemetry::{LogFormat, MetricsSettings, TraceSettings};
use crate::uploads::UploadSettings;
use crate::web::WebSettings;
use crate::workflow::WorkflowSettings;
use crate::ws::WsSettings;

const ENV_PREFIX: &str = "NAGARE__";

/// Where environment variables come from; tests pass a map instead of touching the process.
pub trait EnvSource {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// `nagare.toml` as written, every key optional.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: ServerSection,
    auth: AuthSettings,
    provider: ProviderSection,
    models: ModelsSection,
    limits: LimitsSection,
    log: LogSection,
    websocket: WsSettings,
    store: StoreSettings,
    memory: MemorySettings,
    cache: CacheSettings,
    lambda: LambdaWsSettings,
    grpc: GrpcSettings,
    upstream: UpstreamSettings,
    rate_limits: RateLimitSettings,
    routing: RoutingSettings,
    traces: TraceSettings,
    metrics: MetricsSettings,
    tasks: TaskSettings,
    workflow: WorkflowSettings,
    prompt_cache: PromptCacheSettings,
    guardrails: Vec<GuardrailRule>,
    uploads: UploadSettings,
    knowledge: KnowledgeSettings,
    embeddings: EmbeddingSettings,
    web: WebSettings,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: String,
    data_dir: PathBuf,
    body_limit_bytes: usize,
    shutdown_grace_secs: u64,
    max_connections: usize,
    header_read_timeout_secs: u64,
    body_read_timeout_secs: u64,
    idle_timeout_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            body_limit_bytes: 256 * 1024,
            shutdown_grace_secs: 10,
            max_connections: 10_000,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 60,
        }
    }
}

impl ServerSection {
    fn connections(&self) -> Result<ConnectionSettings, StartupError> {
        let s = self;
        if s.max_connections == 0
            || s.header_read_timeout_secs == 0
            || s.body_read_timeout_secs == 0
            || s.idle_timeout_secs == 0
        {
            return Err(StartupError::Config(
                "server: max_connections, header_read_timeout_secs, body_read_timeout_secs and \
                 idle_timeout_secs must be at least 1"
                    .into(),
            ));
        }
        Ok(ConnectionSettings {
            max_connections: s.max_connections,
            http: Timeouts {
                head: Duration::from_secs(s.header_read_timeout_secs),
                body: Duration::from_secs(s.body_read_timeout_secs),
                idle: Duration::from_secs(s.idle_timeout_secs),
            },
        })
    }
}

/// Which model provider serves requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Mock,
    Bedrock,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct ProviderSection {
    kind: ProviderKind,
    mock: MockSettings,
    bedrock: BedrockSettings,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct ModelsSection {
    default: Option<String>,
    aliases: BTreeMap<String, String>,
    allow: BTreeSet<String>,
    fallbacks: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSection {
    max_tokens: u32,
    max_stop_sequences: usize,
    max_stop_chars: usize,
    max_tools: usize,
    stream_buffer_events: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let r = RequestLimits::default();
        Self {
            max_tokens: r.max_tokens,
            max_stop_sequences: r.max_stop_sequences,
            max_stop_chars: r.max_stop_chars,
            max_tools: r.max_tools,
            stream_buffer_events: PipelineOptions::default().channel_capacity,
        }
    }
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
struct LogSection {
    format: LogFormat,
    prompts: bool,
}

/// Command-line flags, which win over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub grpc_listen: Option<String>,
    pub provider: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// The validated configuration `nagare serve` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where embedded state lives: the dev-mode secret, and later SQLite.
    pub data_dir: PathBuf,
    pub auth: AuthSettings,
    pub body_limit: usize,
    pub shutdown_grace: Duration,
    /// The connection cap and the timeouts of every listener.
    pub connections: ConnectionSettings,
    pub provider: ProviderKind,
    pub mock: MockSettings,
    pub bedrock: BedrockSettings,
    pub models: ModelCatalog,
    pub pipeline: PipelineOptions,
    pub log_format: LogFormat,
    pub websocket: WsSettings,
    pub store: StoreSettings,
    pub memory: MemorySettings,
    pub cache: CacheSettings,
    /// The `nagare-ws` Lambda function's settings.
    pub lambda: LambdaWsSettings,
    /// Where gRPC listens; `None` when `grpc.enabled = false`.
    pub grpc_listen: Option<SocketAddr>,
    pub grpc: GrpcSettings,
    /// Retries and timeouts of model calls.
    pub upstream: UpstreamSettings,
    /// Requests, tokens and upstream streams per principal and per process.
    pub rate_limits: RateLimitSettings,
    /// Trace export over OTLP.
    pub traces: TraceSettings,
    /// `GET /metrics`, and the Lambda functions' metric lines.
    pub metrics: MetricsSettings,
    /// `/v1/tasks` and its workers.
    pub tasks: TaskSettings,
    /// The Step Functions task functions.
    pub workflow: WorkflowSettings,
    /// `/v1/uploads`, and images and documents in chats.
    pub uploads: UploadSettings,
    /// `/v1/knowledge-bases` on the embedded store.
    pub knowledge: KnowledgeSettings,
    /// The browser app at `/`.
    pub web: WebSettings,
}

/// Reads, layers and validates the configuration.
pub fn load(
    file: Option<&Path>,
    env: &dyn EnvSource,
    flags: &Overrides,
) -> Result<Config, StartupError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| StartupError::Io {
                context: format!("reading config file {}", path.display()),
                source,
            })?;
            toml::from_str::<toml::Table>(&text)
                .map_err(|e| StartupError::Config(format!("{}: {e}", path.display())))?
        }
        None => toml::Table::new(),
    };
    for (name, value) in env.vars() {
        if let Some(key) = name.strip_prefix(ENV_PREFIX) {
            let path: Vec<String> = key.split("__").map(str::to_lowercase).collect();
            set(&mut table, &path, env_value(&value), &name)?;
        }
    }
    if let Some(listen) = &flags.listen {
        set(
            &mut table,
            &["server".into(), "listen".into()],
            listen.clone().into(),
            "--listen",
        )?;
    }
    if let Some(listen) = &flags.grpc_listen {
        set(
            &mut table,
            &["grpc".into(), "listen".into()],
            listen.clone().into(),
            "--grpc-listen",
        )?;
    }
    if let Some(dir) = &flags.data_dir {
        let dir = dir.to_string_lossy().into_owned();
        set(
            &mut table,
            &["server".into(), "data_dir".into()],
            dir.into(),
            "--data-dir",
        )?;
    }
    if let Some(provider) = &flags.provider {
        set(
            &mut table,
            &["provider".into(), "kind".into()],
            provider.clone().into(),
            "--provider",
        )?;
    }
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| StartupError::Config(format!("{}: {}", e.path(), e.inner())))?;
    raw.validate()
}

/// An environment value as TOML when it parses as one (`8`, `true`, `["a"]`), else a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
    source: &str,
) -> Result<(), StartupError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(StartupError::Config(format!("{source}: empty key")));
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| {
            StartupError::Config(format!("{source}: `{part}` is a value, not a section"))
        })?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

impl RawConfig {
    fn validate(self) -> Result<Config, StartupError> {
        let bad = |key: &str, why: &str| StartupError::Config(format!("{key}: {why}"));
        let listen: SocketAddr = self.server.listen.parse().map_err(|_| {
            bad(
                "server.listen",
                &format!(
                    "'{}' is not an IP:port address, e.g. 127.0.0.1:8080",
                    self.server.listen
                ),
            )
        })?;
        let grpc_listen: Option<SocketAddr> = if self.grpc.enabled {
            Some(self.grpc.listen.parse().map_err(|_| {
                bad(
                    "grpc.listen",
                    &format!(
                        "'{}' is not an IP:port address, e.g. 127.0.0.1:50051",
                        self.grpc.listen
                    ),
                )
            })?)
        } else {
            None
        };
        let connections = self.server.connections()?;
        if self.server.body_limit_bytes < 1024 {
            return Err(bad("server.body_limit_bytes", "must be at least 1024"));
        }
        if self.limits.max_tokens == 0 {
            return Err(bad("limits.max_tokens", "must be at least 1"));
        }
        if let Some((name, _)) = self
            .models
            .fallbacks
            .iter()
            .find(|(_, chain)| chain.iter().any(|m| m.trim().is_empty()))
        {
            return Err(bad(
                &format!("models.fallbacks.{name}"),
                "every fallback must name a model or an alias",
            ));
        }
        // Each section checks its own values, beside the code it configures.
        let sections = [
            self.grpc.validate(),
            self.websocket.validate(),
            self.lambda.validate(),
            self.cache.validate(),
            self.upstream.validate(),
            self.traces.validate(),
            self.tasks.validate(),
            self.workflow.validate(),
            self.memory.validate(),
            self.uploads.validate(),
            self.knowledge.validate(),
            self.embeddings.validate(),
            self.web.validate(),
            check_guardrails(&self.guardrails),
        ];
        for checked in sections {
            checked.map_err(StartupError::Config)?;
        }
        if self.limits.stream_buffer_events == 0 {
            return Err(bad("limits.stream_buffer_events", "must be at least 1"));
        }
        if let Some((alias, _)) = self
            .models
            .aliases
            .iter()
            .find(|(_, id)| id.trim().is_empty())
        {
            return Err(bad(
                &format!("models.aliases.{alias}"),
                "must name a model id",
            ));
        }
        for issuer in &self.auth.issuers {
            issuer
                .validate()
                .map_err(|e| StartupError::Config(format!("auth.issuers: {e}")))?;
        }
        let dev_mode = self.auth.issuers.is_empty();
        let listeners = [
            ("server.listen", Some(listen)),
            ("grpc.listen", grpc_listen),
        ];
        for (key, addr) in listeners {
            if let Some(addr) = addr
                && dev_mode
                && !addr.ip().is_loopback()
                && !self.auth.dev_allow_non_loopback
            {
                return Err(bad(
                    key,
                    &format!(
                        "{addr} is not a loopback address, and auth is in dev mode (no [[auth.issuers]]); \
                         configure an issuer, or set auth.dev_allow_non_loopback = true if you mean it"
                    ),
                ));
            }
        }
        let mut models = models_for(self.provider.kind, self.models);
        models.routing = self.routing;
        Ok(Config {
            listen,
            data_dir: self.server.data_dir,
            auth: self.auth,
            body_limit: self.server.body_limit_bytes,
            shutdown_grace: Duration::from_secs(self.server.shutdown_grace_secs),
            connections,
            provider: self.provider.kind,
            mock: self.provider.mock,
            bedrock: self.provider.bedrock,
            models,
            pipeline: PipelineOptions {
                limits: RequestLimits {
                    max_tokens: self.limits.max_tokens,
                    max_stop_sequences: self.limits.max_stop_sequences,
                    max_stop_chars: self.limits.max_stop_chars,
                    max_tools: self.limits.max_tools,
                },
                channel_capacity: self.limits.stream_buffer_events,
                log_prompts: self.log.prompts,
                prompt_cache: self.prompt_cache,
                guardrails: self.guardrails,
                embeddings: self.embeddings,
            },
            log_format: self.log.format,
            websocket: self.websocket,
            store: self.store,
            memory: self.memory,
            cache: self.cache,
            lambda: self.lambda,
            grpc_listen,
            grpc: self.grpc,
            upstream: self.upstream,
            rate_limits: self.rate_limits,
            traces: self.traces,
            metrics: self.metrics,
            tasks: self.tasks,
            workflow: self.workflow,
            uploads: self.uploads,
            knowledge: self.knowledge,
            web: self.web,
        })
    }
}

/// The routing table, with aliases `fast` and `smart` filled in for whichever provider runs.
fn models_for(kind: ProviderKind, section: ModelsSection) -> ModelCatalog {
    let (fast, smart) = match kind {
        ProviderKind::Mock => ("mock", "mock.slow"),
        ProviderKind::Bedrock => (
            "anthropic.claude-3-haiku-20240307-v1:0",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
    };
    let mut aliases = section.aliases;
    if aliases.is_empty() {
        aliases.insert("fast".into(), fast.into());
        aliases.insert("smart".into(), smart.into());
    }
    ModelCatalog {
        default: section.default.unwrap_or_else(|| "fast".into()),
        aliases,
        allow: section.allow,
        fallbacks: section.fallbacks,
        routing: RoutingSettings::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err_of(r: Result<Config, StartupError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(c) => panic!("expected an error, got {c:?}"),
        }
    }

    #[test]
    fn defaults_run_the_mock_on_loopback() {
        let c = load(None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.provider, ProviderKind::Mock);
        assert_eq!(c.body_limit, 262_144);
        assert_eq!(c.models.aliases["fast"], "mock");
        assert!(!c.pipeline.log_prompts);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("nagare-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("nagare.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1\"\nbody_limit_bytes = 4096\n[provider.mock]\nttft_ms = 5\n",
        )
        .unwrap();
        let vars = env(&[
            ("NAGARE__SERVER__LISTEN", "127.0.0.1:2"),
            ("NAGARE__PROVIDER__MOCK__TOKENS_PER_SECOND", "0"),
            ("NAGARE__LOG__PROMPTS", "true"),
            ("UNRELATED", "x"),
        ]);
        let flags = Overrides {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let c = load(Some(&path), &vars, &flags).unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.body_limit, 4096);
        assert_eq!(
            c.mock,
            MockSettings {
                ttft_ms: 5,
                tokens_per_second: 0
            }
        );
        assert!(c.pipeline.log_prompts);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = err_of(load(
            None,
            &env(&[("NAGARE__SERVER__LISTN", "x")]),
            &Overrides::default(),
        ));
        assert!(e.contains("listn"), "{e}");
        let e = err_of(load(
            None,
            &env(&[("NAGARE__SERVER__LISTEN", "nowhere")]),
            &Overrides::default(),
        ));
        assert!(e.contains("server.listen"), "{e}");
        let flags = Overrides {
            provider: Some("openai".into()),
            ..Default::default()
        };
        let e = err_of(load(None, &env(&[]), &flags));
        assert!(e.contains("provider.kind"), "{e}");
        let e = err_of(load(
            None,
            &env(&[("NAGARE__LIMITS__MAX_TOKENS", "-1")]),
            &Overrides::default(),
        ));
        assert!(e.contains("limits.max_tokens"), "{e}");
        let e = err_of(load(
            Some(Path::new("/nonexistent/nagare.toml")),
            &env(&[]),
            &Overrides::default(),
        ));
        assert!(e.contains("/nonexistent/nagare.toml"), "{e}");
    }

    #[test]
    fn grpc_listens_on_loopback_by_default_and_can_be_moved_or_disabled() {
        let c = load(None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.grpc_listen, Some("127.0.0.1:50051".parse().unwrap()));
        let flags = Overrides {
            grpc_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = load(None, &env(&[]), &flags).unwrap();
        assert_eq!(c.grpc_listen.map(|a| a.port()), Some(0));
        let off = env(&[("NAGARE__GRPC__ENABLED", "false")]);
        assert_eq!(load(None, &off, &flags).unwrap().grpc_listen, None);
        let bad = Overrides {
            grpc_listen: Some("localhost".into()),
            ..Default::default()
        };
        assert!(err_of(load(None, &env(&[]), &bad)).contains("grpc.listen"));
        let public = Overrides {
            grpc_listen: Some("0.0.0.0:50051".into()),
            ..Default::default()
        };
        let e = err_of(load(None, &env(&[]), &public));
        assert!(e.contains("grpc.listen") && e.contains("dev mode"), "{e}");
    }

    #[test]
    fn dev_mode_stays_on_loopback_unless_told() {
        let public = Overrides {
            listen: Some("0.0.0.0:8080".into()),
            ..Default::default()
        };
        let e = err_of(load(None, &env(&[]), &public));
        assert!(e.contains("auth.dev_allow_non_loopback"), "{e}");
        let vars = env(&[("NAGARE__AUTH__DEV_ALLOW_NON_LOOPBACK", "true")]);
        assert!(load(None, &vars, &public).is_ok());
        let issuer = r#"[{issuer = "https://idp.example.com", audiences = ["app"]}]"#;
        let c = load(None, &env(&[("NAGARE__AUTH__ISSUERS", issuer)]), &public).unwrap();
        assert_eq!(c.auth.issuers[0].audiences, ["app"]);
        let bad = r#"[{issuer = "https://idp.example.com", audiences = ["app"], algorithms = ["HS256"]}]"#;
        let e = err_of(load(None, &env(&[("NAGARE__AUTH__ISSUERS", bad)]), &public));
        assert!(e.contains("HS256"), "{e}");
    }

    #[test]
    fn bedrock_gets_claude_aliases() {
        let flags = Overrides {
            provider: Some("bedrock".into()),
            ..Default::default()
        };
        let c = load(None, &env(&[]), &flags).unwrap();
        assert!(c.models.aliases["fast"].contains("haiku"));
        assert_eq!(c.models.default, "fast");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    const EXAMPLE: &str = include_str!("../../deploy/nagare.example.toml");

    /// Drops empty tables and arrays: the example shows an empty map's shape in a comment.
    fn without_empty(table: toml::Table) -> toml::Table {
        table
            .into_iter()
            .filter_map(|(key, value)| match value {
                toml::Value::Table(t) => {
                    let t = without_empty(t);
                    (!t.is_empty()).then_some((key, toml::Value::Table(t)))
                }
                toml::Value::Array(a) if a.is_empty() => None,
                other => Some((key, other)),
            })
            .collect()
    }

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        let (example, defaults) = (without_empty(example), without_empty(defaults));
        for (section, keys) in &defaults {
            let listed = example.get(section);
            assert_eq!(
                listed,
                Some(keys),
                "deploy/nagare.example.toml: [{section}] differs from the built-in defaults"
            );
        }
        assert_eq!(example, defaults);
    }

    #[test]
    fn loading_the_example_file_gives_the_built_in_configuration() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nagare.example.toml");
        let env = BTreeMap::new();
        let from_file = load(Some(&path), &env, &Overrides::default()).unwrap();
        let built_in = load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
    }
}
