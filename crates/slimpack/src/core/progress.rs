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
        clock();
        Self {
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }

    /// No progress shown: for work running beside work that shows its own.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    pub fn spinner(&self, msg: String) -> ProgressBar {
        timing(&msg);
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
        timing(&msg);
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

/// With `SLIMPACK_TIMINGS` set, each stage's start on stderr, seconds since
/// the first: where a build's time goes (the benchmark reads them), with
/// or without a terminal.
fn timing(msg: &str) {
    if let Some(start) = clock() {
        eprintln!(
            "[{:7.2}s] {}",
            start.elapsed().as_secs_f64(),
            crate::core::text::escape_controls(msg)
        );
    }
}

fn clock() -> Option<std::time::Instant> {
    static START: std::sync::OnceLock<Option<std::time::Instant>> = std::sync::OnceLock::new();
    *START.get_or_init(|| std::env::var_os("SLIMPACK_TIMINGS").map(|_| std::time::Instant::now()))
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
