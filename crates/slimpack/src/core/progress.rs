//! What the user sees: progress while building, and the build report.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// Progress bars on stderr, only when it is a terminal and output is for humans.
#[derive(Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Self {
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }

    /// No progress shown: for work running beside work that shows its own.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    pub fn spinner(&self, msg: String) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new_spinner();
        pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
        pb.set_message(msg);
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    pub fn bytes(&self, msg: String, total: u64) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        pb.set_message(msg);
        pb
    }
}

/// Sizes for people: 12.3 MB (decimal, as registries and `docker images` show).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}
