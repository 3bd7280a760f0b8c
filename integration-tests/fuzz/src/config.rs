//! The coordinator's configuration: a TOML file and the process environment, through
//! `Config::from_toml_str` (what `Config::load` calls with the file's text and the process's
//! variables).
//!
//! Input: the file's text; after a line `#%env` (a comment to TOML), each line `NAME=VALUE` is
//! an environment variable (`CHOREO__…` overrides, `HOSTNAME`, the variables tokens name).
//! Inputs that are not UTF-8 are skipped: both sources are text.
//!
//! What must hold, besides not panicking:
//! - an error names a line inside the file when it names one;
//! - a configuration that loads prints (`Config::to_toml`, what `choreo config` shows) as a
//!   file that loads back to the same configuration, with no `CHOREO__` overrides.

use choreo_coordinator::config::{Config, ConfigError, ENV_PREFIX};

/// The separator between the file and the environment in an input.
pub const ENV_MARKER: &str = "#%env";

/// Splits an input into the file's text and the environment.
pub fn split(input: &str) -> (&str, Vec<(String, String)>) {
    let (file, env) = match input.split_once(&format!("\n{ENV_MARKER}\n")) {
        Some((file, env)) => (file, env),
        None => (input, ""),
    };
    let env = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (file, env)
}

const FILE: &str = "fuzz.toml";

/// The target.
pub fn run(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, env) = split(input);
    let lines = crate::lines_in(text);
    let loaded = Config::from_toml_str(FILE, text, env.clone().into_iter());
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            let shown = e.to_string();
            match &e {
                ConfigError::File { file, line, .. } => {
                    assert_eq!(file, FILE);
                    assert!(line.is_none_or(|l| (1..=lines).contains(&l)), "{shown}");
                }
                ConfigError::Invalid { origin, .. } => {
                    if let Some(line) = origin.strip_prefix(&format!("{FILE}:")) {
                        let line: usize = line.parse().expect("a line number");
                        assert!((1..=lines).contains(&line), "{shown}");
                    }
                }
                ConfigError::Env { var, .. } => {
                    assert!(env.iter().any(|(k, _)| k == var), "{shown}")
                }
                ConfigError::Read { .. } => panic!("nothing is read: {shown}"),
            }
            return;
        }
    };
    let printed = config
        .to_toml()
        .unwrap_or_else(|e| panic!("a loaded configuration does not print: {e}"));
    let others = env.into_iter().filter(|(k, _)| !k.starts_with(ENV_PREFIX));
    let again = Config::from_toml_str("printed.toml", &printed, others)
        .unwrap_or_else(|e| panic!("the printed configuration does not load: {e}\n{printed}"));
    assert_eq!(again, config, "printed and loaded back\n{printed}");
}
