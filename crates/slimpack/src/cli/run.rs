//! `slimpack run`.

use super::{pairs, print_json, RegistryFlags};
use crate::image::Source;
use crate::run::{self, Network, Probe, RunOptions, RunReport};
use anyhow::{anyhow, bail, Result};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(super) struct RunArgs {
    /// `oci:DIR[:TAG]`, an OCI layout directory, `docker-archive:FILE`, a
    /// registry reference (`docker://REF` or `HOST/REPO:TAG`), or a project
    /// directory (built first).
    image: String,
    /// Keep setuid/setgid bits when unpacking (cleared by default; they
    /// never grant privileges in the sandbox either way).
    #[arg(long)]
    keep_setuid: bool,
    /// Start, probe, send a request, send SIGTERM; report and exit (non-zero
    /// if any check fails).
    #[arg(long)]
    check: bool,
    /// HTTP startup probe path (default: a TCP probe, as on Cloud Run).
    #[arg(long)]
    probe: Option<String>,
    /// Host port: the container's $PORT is published on 127.0.0.1:PORT
    /// (on the host network, $PORT itself). Default 8080; a command after
    /// `--` publishes nothing unless --port is given.
    #[arg(long)]
    port: Option<u16>,
    /// $PORT inside the container (isolated network), as Cloud Run's
    /// containerPort.
    #[arg(long, default_value_t = 8080)]
    container_port: u16,
    /// auto (isolated when root and slirp4netns allow, else host),
    /// isolated, or host.
    #[arg(long, value_enum, hide_possible_values = true, default_value_t = Network::Auto)]
    network: Network,
    /// Path of the request made by --check (default: the probe path, else /).
    #[arg(long)]
    request: Option<String>,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Startup probe: seconds before the first probe.
    #[arg(long)]
    probe_initial_delay: Option<f64>,
    /// Startup probe: seconds between probes.
    #[arg(long)]
    probe_period: Option<f64>,
    /// Startup probe: seconds a probe may take.
    #[arg(long)]
    probe_timeout: Option<f64>,
    /// Startup probe: failed probes before giving up.
    #[arg(long)]
    probe_failure_threshold: Option<u32>,
    /// Give up on startup after this many seconds (overrides the probe's period × threshold).
    #[arg(long)]
    startup_timeout: Option<f64>,
    /// K_SERVICE (and K_CONFIGURATION) for the app.
    #[arg(long, default_value = "local")]
    service: String,
    /// KEY=VALUE environment for the app. Repeatable.
    #[arg(long = "env")]
    env: Vec<String>,
    #[command(flatten)]
    common: RegistryFlags,
    /// Run this command in the image instead of its own (after `--`), and
    /// exit with its exit code.
    #[arg(last = true)]
    command: Vec<String>,
}

fn secs(s: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| anyhow!("{flag} {s}: not a number of seconds"))
}

impl RunArgs {
    /// Cloud Run's startup probe with the flags laid over it.
    fn probe(&self) -> Result<Probe> {
        let mut probe = Probe::cloud_run_default(self.probe.clone());
        if let Some(s) = self.probe_initial_delay {
            probe.initial_delay = secs(s, "--probe-initial-delay")?;
        }
        if let Some(s) = self.probe_period {
            probe.period = secs(s, "--probe-period")?;
        }
        if let Some(s) = self.probe_timeout {
            probe.timeout = secs(s, "--probe-timeout")?;
        }
        if let Some(n) = self.probe_failure_threshold {
            probe.failure_threshold = n.max(1);
        }
        if let Some(s) = self.startup_timeout {
            probe.period = secs(s, "--startup-timeout")?;
            probe.failure_threshold = 1;
        }
        Ok(probe)
    }

    fn options(&self) -> Result<RunOptions> {
        let opts = RunOptions {
            port: self.port.unwrap_or(8080),
            publish: self.port.is_some() || self.command.is_empty(),
            container_port: self.container_port,
            network: self.network,
            probe: self.probe()?,
            request_path: self.request.clone(),
            grace: secs(self.grace, "--grace")?,
            service: self.service.clone(),
            env: pairs(&self.env, "--env")?.into_iter().collect(),
            check: self.check,
            command: (!self.command.is_empty()).then(|| self.command.clone()),
        };
        if self.check && opts.command.is_some() {
            bail!("--check runs the image's own command; drop the command after `--` or --check");
        }
        Ok(opts)
    }
}

pub(super) fn run(a: RunArgs) -> Result<i32> {
    let ctx = a.common.context()?;
    let mut source = Source::parse(&a.image)?;
    let mut shown = a.image.clone();
    if let Source::Project(dir) = &source {
        let r = super::build::project_image(&ctx, dir, a.common.json)?;
        shown = r.outputs[0].clone();
        source = Source::parse(&shown)?;
    }
    let opts = a.options()?;
    let preparing = Instant::now();
    let (store, image) = source.load(&ctx.cache, &a.common.insecure, &ctx.progress)?;
    let root = run::rootfs(&store, &image, &ctx.cache, a.keep_setuid)?;
    let prepare_ms = preparing.elapsed().as_millis() as u64;
    let (json, check, port) = (a.common.json, a.check, opts.port);
    let on_ready = move |ms: u64| {
        if !json && !check {
            eprintln!(
                "serving {shown} on http://127.0.0.1:{port} (ready after {ms} ms); Ctrl-C stops it"
            );
        }
    };
    let mut report = run::run(&a.image, &image, &root, &opts, &on_ready)?;
    report.prepare_ms = Some(prepare_ms);
    if opts.command.is_some() || (report.job_ms.is_some() && !check) {
        // A command, a job or a script: its exit code is ours.
        return Ok(report.exit_code.unwrap_or(1));
    }
    if json {
        print_json(&report)?;
    } else if check {
        print_checks(&report);
    }
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("{} check(s) failed: {}", failed.len(), failed.join(", "));
    }
    if let Some(code) = report.exit_code.filter(|c| *c != 0 && !check) {
        bail!("the app exited with code {code}");
    }
    Ok(0)
}

fn print_checks(report: &RunReport) {
    println!("Checked {}", report.image);
    for c in &report.checks {
        println!(
            "  {} {:<26} {}",
            if c.pass { "pass" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    println!("  network: {}", report.network);
    match (report.time_to_ready_ms, report.job_ms) {
        (Some(ms), _) => println!("  time to ready: {ms} ms"),
        (None, Some(_)) => {}
        (None, None) => println!("  time to ready: never"),
    }
    if !report.passed() {
        println!("  last output of the app:");
        for l in &report.output_tail {
            println!("    {l}");
        }
    }
}
