use clap::Parser;

fn main() {
    std::process::exit(slimpack::cli::main(slimpack::cli::Cli::parse()));
}
