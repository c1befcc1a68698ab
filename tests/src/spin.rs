//! Real Spin for the end-to-end suite: the CLI (and its cron plugin) from
//! `../shared/spin`, unpacked once under `target/`, running the unchanged
//! `spin.toml` and release components.
//!
//! Where no Spin is at hand (a machine without `../shared/spin`) the tests
//! that need it skip with one line saying so — unless
//! `EDGE_TEST_REQUIRE_SPIN=1` (set by CI), where a missing Spin fails them.

use crate::workspace_dir;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Spin versions the suite runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinVersion {
    /// What `spin up` users install today, with trigger-cron 0.5.0.
    V4_0_2,
    /// What SpinKube's containerd-shim-spin embeds (CLI only, no cron plugin).
    V3_6_3,
}

impl SpinVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            SpinVersion::V4_0_2 => "4.0.2",
            SpinVersion::V3_6_3 => "3.6.3",
        }
    }

    /// Whether this installation runs `[[trigger.cron]]` (has the plugin).
    pub fn has_cron(self) -> bool {
        self == SpinVersion::V4_0_2
    }

    fn dir(self) -> &'static str {
        match self {
            SpinVersion::V4_0_2 => "target/spin",
            SpinVersion::V3_6_3 => "target/spin-3",
        }
    }
}

/// An unpacked Spin: its binary and its data directory (plugins).
#[derive(Clone, Debug)]
pub struct SpinInstall {
    pub version: SpinVersion,
    pub bin: PathBuf,
    pub data_dir: PathBuf,
}

/// Where the shared Spin archives are (`EDGE_TEST_SPIN_ARCHIVES` overrides).
fn archives() -> PathBuf {
    std::env::var_os("EDGE_TEST_SPIN_ARCHIVES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("../shared/spin"))
}

fn required() -> bool {
    std::env::var("EDGE_TEST_REQUIRE_SPIN").is_ok_and(|v| v == "1")
}

impl SpinInstall {
    /// Spin `version`, unpacked on first use; `None` when it is not at hand
    /// and not required (the caller skips).
    pub fn get(version: SpinVersion) -> Option<SpinInstall> {
        static V4: OnceLock<Result<SpinInstall, String>> = OnceLock::new();
        static V3: OnceLock<Result<SpinInstall, String>> = OnceLock::new();
        let cell = match version {
            SpinVersion::V4_0_2 => &V4,
            SpinVersion::V3_6_3 => &V3,
        };
        let found = cell.get_or_init(|| {
            let found = unpack(version);
            if let Err(why) = &found {
                if !required() {
                    // Once per test binary, past the test harness's capture.
                    let _ = writeln!(
                        std::io::stderr(),
                        "skipping the real-Spin tests: no Spin {} at hand ({why})",
                        version.as_str()
                    );
                }
            }
            found
        });
        match found {
            Ok(install) => Some(install.clone()),
            Err(why) if required() => panic!(
                "Spin {} is required (EDGE_TEST_REQUIRE_SPIN=1): {why}",
                version.as_str()
            ),
            Err(_) => None,
        }
    }
}

fn unpack(version: SpinVersion) -> Result<SpinInstall, String> {
    let install = archives().join("install");
    if !install.exists() {
        return Err(format!("{} does not exist", install.display()));
    }
    let dest = workspace_dir().join(version.dir());
    let output = Command::new(&install)
        .arg(&dest)
        .arg(version.as_str())
        .output()
        .map_err(|e| format!("{}: {e}", install.display()))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
    }
    let found = SpinInstall {
        version,
        bin: dest.join("bin/spin"),
        data_dir: dest.join("data"),
    };
    let reported = Command::new(&found.bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", found.bin.display()))?;
    let reported = String::from_utf8_lossy(&reported.stdout);
    if !reported.starts_with(&format!("spin {} ", version.as_str())) {
        return Err(format!("{} reports {reported:?}", found.bin.display()));
    }
    Ok(found)
}

/// The components of `manifest` that an HTTP route serves: what a Spin
/// without the cron plugin is told to run (`spin up -c ...`).
pub fn http_components(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("read the manifest");
    let manifest: toml::Table = toml::from_str(&text).expect("the manifest is TOML");
    let mut components: Vec<String> = manifest["trigger"]["http"]
        .as_array()
        .expect("HTTP triggers")
        .iter()
        .filter_map(|trigger| trigger["component"].as_str().map(str::to_owned))
        .collect();
    components.sort();
    components.dedup();
    components
}
