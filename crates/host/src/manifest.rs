//! `spin.toml` (manifest version 2): the single source of truth for the app.
//!
//! Only the part of Spin's schema this project uses is accepted. Tables reject
//! unknown fields like Spin does, so a manifest that would be read differently
//! by Spin fails here loudly instead of being half-understood.

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
    /// Per-trigger application settings; only `[application.trigger.http] base = "/"` is
    /// accepted (Spin 3+ rejects any other base).
    #[serde(default)]
    pub trigger: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
    #[serde(default)]
    pub cron: Vec<CronTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    pub route: HttpRoute,
    pub component: String,
    #[serde(default)]
    pub id: Option<String>,
}

/// `route = "/path"` or `route = { private = true }` (reachable only by service chaining).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum HttpRoute {
    Path(String),
    Private { private: bool },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    pub component: String,
    pub cron_expression: String,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentDecl {
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Used by `spin build`; this host only builds through `./dev build`.
    #[serde(default)]
    pub build: Option<toml::Table>,
}

/// A loaded manifest and the directory its relative paths start from.
#[derive(Debug)]
pub struct App {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl App {
    pub fn load(path: &Path) -> Result<App> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("invalid manifest {}", path.display()))?;
        manifest.validate()?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(App { manifest, dir })
    }

    /// The `.wasm` file of a component, resolved against the manifest directory.
    pub fn source_path(&self, component: &ComponentDecl) -> PathBuf {
        self.dir.join(&component.source)
    }
}

impl Manifest {
    fn validate(&self) -> Result<()> {
        ensure!(
            self.spin_manifest_version == 2,
            "spin_manifest_version must be 2 (found {})",
            self.spin_manifest_version
        );
        if let Some(trigger) = &self.application.trigger {
            for (kind, settings) in trigger {
                ensure!(kind == "http", "invalid metadata value for {kind:?}");
                let settings = settings
                    .as_table()
                    .context("[application.trigger.http] must be a table")?;
                for (key, value) in settings {
                    ensure!(
                        key == "base" && value.as_str() == Some("/"),
                        "This application is using the deprecated trigger 'base' field. The base must be prepended to each [[trigger.http]]'s 'route'."
                    );
                }
            }
        }
        for (name, decl) in &self.variables {
            check_variable_name(name)?;
            ensure!(
                decl.required != decl.default.is_some(),
                "variable {name:?} must be `required` OR have a `default`"
            );
        }
        for (id, component) in &self.component {
            check_component_id(id)?;
            for (name, template) in &component.variables {
                check_variable_name(name)?;
                for used in crate::variables::template_references(template)
                    .with_context(|| format!("component {id:?} variable {name:?}"))?
                {
                    ensure!(
                        self.variables.contains_key(&used),
                        "invalid variable template: unknown variable {used:?} (component {id:?})"
                    );
                }
            }
        }
        let known = |component: &str| self.component.contains_key(component);
        for trigger in &self.trigger.http {
            ensure!(
                known(&trigger.component),
                "http trigger names unknown component {:?}",
                trigger.component
            );
            if let HttpRoute::Private { private } = trigger.route {
                ensure!(
                    private,
                    "route must be a string pattern or '{{ private = true }}': '{}' has {{ private = false }}",
                    trigger.component
                );
            }
        }
        for trigger in &self.trigger.cron {
            ensure!(
                known(&trigger.component),
                "cron trigger names unknown component {:?}",
                trigger.component
            );
        }
        Ok(())
    }
}

/// Spin's `LowerSnakeId`: words of `[a-z][a-z0-9]*` joined by single `_`.
fn check_variable_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('_').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !ok {
        bail!(
            "invalid variable name {name:?}: lower-case words separated by '_', each starting with a letter"
        );
    }
    Ok(())
}

/// Spin's kebab-case component ids.
fn check_component_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.split('-').all(|word| {
            word.starts_with(|c: char| c.is_ascii_lowercase())
                && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if !ok {
        bail!("invalid component id {id:?}: lower-case words separated by '-', each starting with a letter");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(text)?;
        manifest.validate()?;
        Ok(manifest)
    }

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
[variables]
pg_host = { default = "127.0.0.1:5432" }
secret = { required = true, secret = true }
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.cron]]
component = "api"
cron_expression = "0 * * * * *"
[component.api]
source = "api.wasm"
allowed_outbound_hosts = ["postgres://{{ pg_host }}"]
[component.api.variables]
token = "{{ secret }}"
"#;

    #[test]
    fn reads_the_parts_this_host_serves() {
        let manifest = parse(MINIMAL).unwrap();
        assert_eq!(manifest.trigger.http.len(), 1);
        assert_eq!(manifest.trigger.cron[0].cron_expression, "0 * * * * *");
        assert_eq!(manifest.component["api"].variables["token"], "{{ secret }}");
    }

    #[test]
    fn rejects_what_spin_rejects() {
        let cases = [
            MINIMAL.replace("pg_host = { default", "pg_host = { required = true, default"),
            MINIMAL.replace("{{ secret }}", "{{ nope }}"),
            MINIMAL.replace("[component.api]", "[component.api]\nunknown_field = 1"),
            MINIMAL.replace("spin_manifest_version = 2", "spin_manifest_version = 1"),
            MINIMAL.replace(
                "[component.api.variables]",
                "[component.api.variables]\nBad_Name = \"x\"",
            ),
            MINIMAL.replace(
                "[variables]",
                "[application.trigger.http]\nbase = \"/v1\"\n[variables]",
            ),
            MINIMAL.replace(
                "component = \"api\"\n[[trigger.cron]]",
                "component = \"missing\"\n[[trigger.cron]]",
            ),
        ];
        for case in cases {
            assert!(parse(&case).is_err(), "{case}");
        }
    }
}
