//! `nagare web export`: the browser app as files for a bucket (S3 behind CloudFront), talking to
//! the stack named in `[web]`. A bucket sends no headers of its own, so the page carries its
//! Content-Security-Policy in a `<meta>` element.

use std::path::{Path, PathBuf};

use super::{Assets, Features, WebSettings};

/// Writes `index.html`, `config.json` and `assets/{version}/…` under `out`; returns the paths
/// written, `index.html` first.
pub fn export(settings: &WebSettings, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let assets = Assets::embedded();
    let index = String::from_utf8_lossy(&assets.index.body).replacen(
        "<meta charset=\"utf-8\">",
        &format!(
            "<meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
            settings.meta_policy()
        ),
        1,
    );
    // What a deployed stack serves: memory and uploads, and Bedrock's knowledge bases, which are
    // named by configuration rather than listed.
    let features = Features {
        conversations: true,
        uploads: true,
        knowledge_bases: false,
    };
    let mut files = vec![
        (out.join("index.html"), index.into_bytes()),
        (
            out.join("config.json"),
            settings.page_config(features).to_string().into_bytes(),
        ),
    ];
    let dir = out.join("assets").join(&assets.version);
    files.extend(
        assets
            .files
            .iter()
            .map(|a| (dir.join(a.path), a.body.to_vec())),
    );
    for (path, bytes) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_is_the_app_with_its_policy_and_config_in_files() {
        let out = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let settings = WebSettings {
            api_url: "https://api.example.com".into(),
            ws_url: "wss://ws.example.com/prod".into(),
            ws_token: super::super::WsToken::Query,
            ..WebSettings::default()
        };
        let written = export(&settings, out.path()).unwrap_or_else(|e| panic!("{e}"));
        let version = Assets::embedded().version;
        let read = |p: &str| std::fs::read_to_string(out.path().join(p)).unwrap_or_default();
        let index = read("index.html");
        assert!(index.contains("http-equiv=\"Content-Security-Policy\""));
        assert!(index.contains("connect-src 'self' https://api.example.com wss://ws.example.com"));
        assert!(!index.contains("frame-ancestors"), "ignored in <meta>");
        assert!(index.contains(&format!("assets/{version}/js/main.js")));
        let config: serde_json::Value =
            serde_json::from_str(&read("config.json")).unwrap_or_default();
        assert_eq!(config["ws_token"], "query");
        assert_eq!(config["features"]["knowledge_bases"], false);
        assert!(!read(&format!("assets/{version}/js/markdown.js")).is_empty());
        assert_eq!(written.len(), 2 + Assets::embedded().files.len());
    }
}
