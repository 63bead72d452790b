use clap::Parser;

fn main() {
    let cli = slimpack::cli::Cli::parse();
    if let Err(e) = slimpack::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
