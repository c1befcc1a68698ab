//! The served OpenAPI document as an oracle: a real response must be a
//! documented status of a documented operation, and its body must match the
//! documented schema.

use crate::Reply;
use serde_json::{json, Value};

pub struct Contract {
    doc: Value,
}

impl Contract {
    pub fn new(doc: Value) -> Contract {
        assert_eq!(doc["openapi"], "3.1.0");
        Contract { doc }
    }

    /// Every documented `(method, path template)`.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut operations = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
        operations
    }

    /// A response object, or the one a `$ref` to `#/components/responses/…` names.
    fn resolve<'a>(&'a self, response: &'a Value) -> &'a Value {
        match response["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/responses/"))
        {
            Some(name) => &self.doc["components"]["responses"][name],
            None => response,
        }
    }

    /// Panic unless `reply` is a documented answer of `method template`.
    #[track_caller]
    pub fn check(&self, method: &str, template: &str, reply: &Reply) {
        let operation = &self.doc["paths"][template][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {template} is not documented");
        let response = self.resolve(&operation["responses"][reply.status.to_string()]);
        assert!(
            response.is_object(),
            "{method} {template} answered {} which is not documented: {}",
            reply.status,
            reply.text
        );
        let content_type = reply.header("content-type").unwrap_or_default().to_owned();
        let Some(media) = response["content"].get(&content_type) else {
            panic!(
                "{method} {template} {}: content-type {content_type:?} not documented",
                reply.status
            );
        };
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [media["schema"]],
        });
        let validator = jsonschema::validator_for(&schema).expect("the documented schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&reply.body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {}: body does not match its schema:\n{}\n{}",
            reply.status,
            errors.join("\n"),
            reply.text
        );
        if let Some(headers) = response["headers"].as_object() {
            for name in headers.keys() {
                assert!(
                    reply.header(name).is_some(),
                    "{method} {template} {}: missing header {name}",
                    reply.status
                );
            }
        }
    }
}
