//! The Docker path, beside the daemonless one: Dockerfiles parsed for real
//! (the base of the emitter and linter of issue 7).

pub mod emit;
pub mod lint;
pub mod parse;

pub use parse::{
    expand, parse, Args, Dockerfile, Flag, Heredoc, Instruction, ParseError, Source, Stage,
};
