//! `nodeagent`: the daemon (`nodeagent run`) and the command-line client that talks to it.
//!
//! This file only parses the command line and dispatches; the daemon's start-up sequence is in
//! [`run`], its configuration layering in [`config`], and the client commands in [`cli`].

mod cli;
mod config;
mod pidlock;
mod receiver;
mod run;
mod security;
mod telemetry;

use clap::{CommandFactory as _, FromArgMatches as _};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = match cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            if let Some(msg) = env_value_error(&e, std::env::args_os().skip(1)) {
                eprintln!("error: {msg}");
                return ExitCode::from(2);
            }
            e.exit()
        }
    };
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
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

/// A bad value that came from an option's environment variable (`NODEAGENT_RING_SIZE=abc`):
/// clap's own message names only the flag (`--ring-size <N>`), which the user never typed
/// (issue 21). Returns the message naming the variable, or `None` when the value came from the
/// command line (or the error is of another kind).
fn env_value_error(
    e: &clap::Error,
    argv: impl Iterator<Item = std::ffi::OsString>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = e.get(ContextKind::InvalidValue)? else {
        return None;
    };
    let long = arg
        .strip_prefix("--")?
        .split([' ', '='])
        .next()?
        .to_string();
    let flag = format!("--{long}");
    let flag_eq = format!("--{long}=");
    let typed = argv
        .filter_map(|a| a.into_string().ok())
        .any(|a| a == flag || a.starts_with(&flag_eq));
    if typed {
        return None;
    }
    let cmd = cli::Cli::command();
    let env = std::iter::once(&cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long.as_str()))?
        .get_env()?
        .to_str()?
        .to_string();
    if std::env::var_os(&env).as_deref() != Some(std::ffi::OsStr::new(value)) {
        return None;
    }
    let why = std::error::Error::source(e)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    Some(format!(
        "invalid value '{value}' in the environment variable {env} (read as {flag}){why}; \
         fix or unset {env}"
    ))
}
