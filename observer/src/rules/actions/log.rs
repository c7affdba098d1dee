//! `log`: records the breach and changes nothing.

use super::{Action, ActionError, Breach, Step};

/// Records the breach only (the engine's audit record is the whole effect).
#[derive(Debug)]
pub struct Log;

impl Action for Log {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn describe(&self) -> String {
        "log".to_owned()
    }

    fn plan(&self, _breach: &Breach) -> Result<Vec<Step>, ActionError> {
        Ok(vec![Step::Log])
    }
}
