//! Errors that say what to do: every hint is shown the same way, on its own
//! line under the message, whoever raised it.

use std::fmt;

/// An error and what to do about it.
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n  hint: {}", self.message, self.hint)
    }
}

impl std::error::Error for Hinted {}

/// `message`, then `  hint: hint` on the next line.
pub fn hinted(message: impl fmt::Display, hint: impl fmt::Display) -> anyhow::Error {
    Hinted {
        message: message.to_string(),
        hint: hint.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_is_on_its_own_line() {
        let e = hinted("repository x does not exist.", "pass --create-repo");
        assert_eq!(
            format!("{e:#}"),
            "repository x does not exist.\n  hint: pass --create-repo"
        );
        assert!(e.downcast_ref::<Hinted>().is_some());
    }
}
