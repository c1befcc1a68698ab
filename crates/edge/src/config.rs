//! Spin variables this app declares (see `spin.toml`).

use crate::Problem;
use spin_sdk::variables;

/// Read a variable the component's manifest declares. A missing value is a
/// deployment fault, answered as `503` rather than a panic.
pub fn variable(name: &str) -> Result<String, Problem> {
    variables::get(name).map_err(|e| Problem::unavailable(format!("variable {name} is not available ({e})")))
}

/// An optional variable: empty means "not set".
pub fn optional_variable(name: &str) -> Result<Option<String>, Problem> {
    let value = variable(name)?;
    Ok((!value.is_empty()).then_some(value))
}
