//! A real webhook receiver for the tests (`tests/receiver/receiver.py`): it
//! checks every delivery's signature with the Standard Webhooks reference
//! library from PyPI, not with the app's code, and answers as a test tells
//! it (`204`, `500`, slowly, or failing some orders' events).

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The receiver's Python, with `standardwebhooks` installed (`./dev test`
/// makes it: `target/receiver-venv`).
fn python() -> Result<std::path::PathBuf> {
    let python = crate::workspace_dir().join("target/receiver-venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: ./dev test installs the receiver's Python (standardwebhooks)",
            python.display()
        );
    }
    Ok(python)
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub webhook_id: Option<String>,
    pub timestamp: Option<String>,
    pub verified: bool,
    #[serde(default)]
    pub error: Option<String>,
    pub answered: u16,
    pub started_at: f64,
    pub ended_at: f64,
    /// The body as received, byte for byte (as UTF-8).
    pub body: String,
    pub payload: Value,
}

impl Delivery {
    pub fn event_type(&self) -> &str {
        self.payload["type"].as_str().unwrap_or_default()
    }

    pub fn order_id(&self) -> Option<i64> {
        self.payload["data"]["orderId"].as_i64()
    }
}

/// A running receiver.
pub struct Receiver {
    child: Child,
    port: u16,
    /// `whsec_…`, as the app's `webhook_secret`.
    pub secret: String,
    client: reqwest::Client,
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        let port = crate::private::free_port();
        let key: [u8; 24] = rand_key();
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        Ok(Receiver {
            child: spawn(port, &secret)?,
            port,
            secret,
            client: reqwest::Client::new(),
        })
    }

    /// Start it again on the same port with the same secret (its record of
    /// deliveries starts empty).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.child = spawn(self.port, &self.secret)?;
        Ok(())
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("{}/hook", self.origin())
    }

    /// The app's webhook variables pointing at this receiver.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SPIN_VARIABLE_WEBHOOK_URL", self.url()),
            ("SPIN_VARIABLE_WEBHOOK_ORIGIN", self.origin()),
            ("SPIN_VARIABLE_WEBHOOK_SECRET", self.secret.clone()),
        ]
    }

    /// Change how it answers (`{"status": 500}`, `{"delay": 12}`, `{"failOrders": [7]}`).
    pub async fn control(&self, controls: Value) -> Result<()> {
        self.client
            .post(format!("{}/control", self.origin()))
            .json(&controls)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Every delivery so far, oldest first.
    pub async fn deliveries(&self) -> Result<Vec<Delivery>> {
        Ok(self
            .client
            .get(format!("{}/deliveries", self.origin()))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Poll until `done` holds for the deliveries (every 100 ms), or `within` passes.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Delivery]) -> bool,
    ) -> Result<Vec<Delivery>> {
        let started = std::time::Instant::now();
        loop {
            let deliveries = self.deliveries().await?;
            if done(&deliveries) {
                return Ok(deliveries);
            }
            if started.elapsed() > within {
                bail!("not within {within:?}; deliveries so far: {deliveries:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop it (deliveries then meet a refused connection).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, secret: &str) -> Result<Child> {
    let script = crate::workspace_dir().join("tests/receiver/receiver.py");
    let mut child = Command::new(python()?)
        .arg(&script)
        .arg(port.to_string())
        .arg(secret)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start the webhook receiver")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line)?;
    if !line.starts_with("Serving ") {
        let _ = child.kill();
        bail!("the webhook receiver did not start: {line:?}");
    }
    Ok(child)
}

fn rand_key() -> [u8; 24] {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let more = uuid::Uuid::new_v4().into_bytes();
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&bytes);
    key[16..].copy_from_slice(&more[..8]);
    key
}
