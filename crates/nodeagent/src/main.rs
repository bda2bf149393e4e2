//! `nodeagent`: the daemon (`nodeagent run`) and the command-line client that talks to it.
//!
//! This file only parses the command line and dispatches; the daemon's start-up sequence is in
//! [`run`], its configuration layering in [`config`], and the client commands in [`cli`].

mod cli;
mod config;
mod receiver;
mod run;
mod security;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let result = match args.command {
        cli::Command::Run(run_args) => run::main(&args.global, *run_args),
        cli::Command::Sink(sink_args) => receiver::main(*sink_args),
        command => cli::main(&args.global, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "binding ...: Address in use".
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
