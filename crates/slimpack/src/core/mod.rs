//! What every stage uses and nothing of slimpack's own: the content-addressed
//! cache, HTTP with the host's trust, the clock of an image, files written
//! whole, progress, git. It imports no other module of the crate.

pub mod cache;
pub mod errors;
pub mod fs;
pub mod git;
pub mod http;
pub mod parallel;
pub mod progress;
pub mod text;
pub mod time;

/// The first executable file called `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
