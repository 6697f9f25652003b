//! The `sluicebox` command line: the arguments (`args`, `serve`, `aws`, `bench`) and
//! printing. What each command does is in the library ([`sluicebox::app`]).

mod args;
#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "bench")]
mod bench;
mod serve;

use std::fmt::Display;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;
use sluicebox::app;

use args::{Cli, Command};

// Records are many small allocations; mimalloc handles that pattern much faster than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let result = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(command(cli.command)),
        Err(e) => Err(sluicebox::Error::internal("tokio", "cannot start the runtime", e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bars are drawn for a person at a terminal, never into `--json` output.
fn bars(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

async fn command(command: Command) -> sluicebox::Result<()> {
    match command {
        Command::Run(a) => {
            let json = a.json;
            show(json, &app::run(a.request(bars(json))).await?)
        }
        Command::Redrive(a) => {
            let json = a.json;
            show(json, &app::redrive(a.request(bars(json))).await?)
        }
        Command::Plan(a) => show(a.json, &app::plan(a.request()).await?),
        Command::Init(a) => emit(&app::init(a.request())?),
        Command::Status(a) => show(a.json, &app::status(a.request()).await?),
        Command::Check(a) => emit(&app::check(a.request()).await?),
        Command::Test(a) => {
            let (results, verdict) = app::test(a.config, a.data_dir).await?;
            match a.json {
                true => emit(&json_line(&results))?,
                false => emit(&sluicebox::tools::check::report(&results))?,
            }
            verdict
        }
        Command::Worker(a) => app::worker(a.request()).await,
        Command::Watch(a) => {
            let json = a.json;
            app::watch(a.request(), &mut |o| drop(show(json, o))).await
        }
        Command::Stream(a) => show(a.json, &app::stream(a.request()).await?),
        Command::Ddl(a) => emit(&app::ddl(a.request())?),
        #[cfg(feature = "bench")]
        Command::Bench(a) if a.stream => {
            let python = a.duckdb_python();
            let measured = app::bench_stream(&a.data_dir, a.records, &a.destinations(), python.as_deref())?;
            measured.iter().try_for_each(|m| show(a.json, m))
        }
        #[cfg(feature = "bench")]
        Command::Bench(a) => {
            let (measured, notes) = app::bench_job(&a.data_dir, &a.benches(), &a.out).await?;
            measured.iter().try_for_each(|m| show(a.json, m))?;
            notes.iter().filter(|_| !a.json).try_for_each(|n| emit(&format!("{n}\n")))
        }
        #[cfg(feature = "aws")]
        Command::Produce(a) => {
            let json = a.json;
            show(json, &app::produce(a.request(bars(json))).await?)
        }
        #[cfg(feature = "aws")]
        Command::Aws { command } => emit(&app::setup(&command.setup()).await?),
    }
}

/// Print a result: one JSON line for programs, or its text for people.
fn show<T: Serialize + Display>(json: bool, value: &T) -> sluicebox::Result<()> {
    match json {
        true => emit(&json_line(value)),
        false => emit(&value.to_string()),
    }
}

fn json_line<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default() + "\n"
}

/// Print to stdout, ending with a line break; a closed pipe (`sluicebox run … | head`) is
/// not an error worth a panic.
fn emit(text: &str) -> sluicebox::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.is_empty() && !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    Ok(())
}
