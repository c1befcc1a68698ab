//! Spin variables: application variables from providers, component variables
//! as `{{ name }}` templates over them.
//!
//! Like Spin's default provider chain: the environment (`SPIN_VARIABLE_<NAME>`,
//! then a `.env` file in the working directory) overrides the manifest's
//! `default`. A required variable with no value stops start-up with Spin's
//! message. Environment and `.env` are read once at start-up: Spin re-reads
//! them per call, but nothing changes a running process's environment.

use crate::manifest::Manifest;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, HashMap};

/// The resolved application variables.
#[derive(Debug, Clone)]
pub struct Resolver {
    values: HashMap<String, String>,
}

/// The `.env` file of the working directory, if any.
fn dotenv() -> HashMap<String, String> {
    dotenvy::from_filename_iter(".env")
        .map(|entries| entries.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// The environment variable Spin's env provider reads for `name`.
pub fn env_name(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

impl Resolver {
    /// Resolve every application variable, or fail like Spin when a required
    /// one has no provider value.
    pub fn from_env(manifest: &Manifest) -> Result<Resolver> {
        let dotenv = dotenv();
        Resolver::from_lookup(manifest, |key| {
            std::env::var(key).ok().or_else(|| dotenv.get(key).cloned())
        })
    }

    /// One application variable by the same providers, for the commands that
    /// need only it (`migrate` runs before `database_id` can exist).
    pub fn one_from_env(manifest: &Manifest, name: &str) -> Result<String> {
        let key = env_name(name);
        std::env::var(&key)
            .ok()
            .or_else(|| dotenv().remove(&key))
            .or_else(|| manifest.variables.get(name).and_then(|decl| decl.default.clone()))
            .ok_or_else(|| {
                anyhow::anyhow!("provider error: no provider resolved required variable(s): [Key({name:?})]")
            })
    }

    pub fn from_lookup(manifest: &Manifest, lookup: impl Fn(&str) -> Option<String>) -> Result<Resolver> {
        let mut values = HashMap::new();
        let mut missing = Vec::new();
        for (name, decl) in &manifest.variables {
            match lookup(&env_name(name)).or_else(|| decl.default.clone()) {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None => missing.push(format!("Key({name:?})")),
            }
        }
        if !missing.is_empty() {
            bail!(
                "provider error: no provider resolved required variable(s): [{}]",
                missing.join(", ")
            );
        }
        Ok(Resolver { values })
    }

    /// Render a `{{ name }}` template against the application variables.
    pub fn render(&self, template: &str) -> Result<String> {
        let mut out = String::with_capacity(template.len());
        for piece in parse_template(template)? {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Variable(name) => match self.values.get(name) {
                    Some(value) => out.push_str(value),
                    None => bail!("invalid variable template: unknown variable {name:?}"),
                },
            }
        }
        Ok(out)
    }

    /// Resolve a component's `[component.x.variables]` table.
    pub fn component_variables(
        &self,
        declared: &BTreeMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        declared
            .iter()
            .map(|(name, template)| Ok((name.clone(), self.render(template)?)))
            .collect()
    }
}

enum Piece<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

fn parse_template(template: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("unmatched '{{{{' in template");
        };
        pieces.push(Piece::Variable(after[..end].trim()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// The application variables a template refers to.
pub fn template_references(template: &str) -> Result<Vec<String>> {
    Ok(parse_template(template)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Variable(name) => Some(name.to_owned()),
            Piece::Literal(_) => None,
        })
        .collect())
}

/// Spin's runtime check of a name passed to `variables.get`; the error text
/// is Spin's `invalid-name` payload.
pub fn validate_key(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        Some(format!(
            "invalid character {bad:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        ))
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lowercase ASCII letter".to_owned())
    } else if name.ends_with('_') {
        Some("must end with a lowercase ASCII letter or digit".to_owned())
    } else if name.contains("__") {
        Some("must not contain multiple consecutive underscores".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(format!("{name:?}: {reason}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        toml::from_str(
            r#"
spin_manifest_version = 2
[application]
name = "app"
[variables]
host = { default = "127.0.0.1" }
secret = { required = true }
"#,
        )
        .unwrap()
    }

    #[test]
    fn environment_overrides_default() {
        let resolver = Resolver::from_lookup(&manifest(), |key| match key {
            "SPIN_VARIABLE_HOST" => Some("10.0.0.1".into()),
            "SPIN_VARIABLE_SECRET" => Some("s".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(resolver.render("{{ host }}:{{secret}}!").unwrap(), "10.0.0.1:s!");
    }

    #[test]
    fn default_applies_and_missing_required_fails_like_spin() {
        let err = Resolver::from_lookup(&manifest(), |_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"provider error: no provider resolved required variable(s): [Key("secret")]"#
        );
        let resolver =
            Resolver::from_lookup(&manifest(), |k| (k == "SPIN_VARIABLE_SECRET").then(String::new)).unwrap();
        assert_eq!(resolver.render("{{ host }}").unwrap(), "127.0.0.1");
        assert_eq!(resolver.render("{{ secret }}").unwrap(), "");
    }

    #[test]
    fn templates_report_errors() {
        assert!(template_references("{{ open").is_err());
        assert_eq!(template_references("a{{ x }}b{{y}}").unwrap(), vec!["x", "y"]);
    }

    #[test]
    fn key_validation_matches_spin() {
        assert!(validate_key("pg_url").is_ok());
        assert!(validate_key("db1").is_ok());
        assert_eq!(
            validate_key("Foo").unwrap_err(),
            r#""Foo": invalid character 'F'. Variable names may contain only lower-case letters, numbers, and underscores."#
        );
        for bad in ["", "1a", "a_", "a__b", "a-b"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }
}
