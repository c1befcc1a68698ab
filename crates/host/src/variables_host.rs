//! `fermyon:spin/variables@2.0.0`: a component reads only its own
//! `[component.x.variables]`, with Spin's error variants and texts.

use crate::bindings::spin::fermyon::spin::variables::{Error, Host};
use crate::state::InstanceState;

impl Host for InstanceState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        if let Err(reason) = crate::variables::validate_key(&name) {
            return Ok(Err(Error::InvalidName(reason)));
        }
        Ok(match self.component.variables.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(Error::Undefined(format!(
                "no variable for {:?}.{name:?}",
                self.component.id
            ))),
        })
    }
}
