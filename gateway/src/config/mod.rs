//! Gateway configuration: the TOML file parsed into typed values, with every problem reported by key path.

mod convert;
mod raw;
mod typed;

use std::{fmt, path::Path};

/// A file's gateway config and the raw sections other parts of the binary
/// own (the controller's), with every problem found so far.
#[derive(Debug)]
pub struct Sections {
    /// `None` when the gateway sections have problems.
    pub config: Option<Config>,
    /// The caller's sections that were present, still as TOML.
    pub extra: toml::Table,
    pub problems: Vec<Problem>,
}

pub use typed::{
    ClientKeys, Config, EndpointSpec, FallbackSpec, GeoConfig, Limits, Listen, RegionSpec,
    RetryConfig, Timeouts, TlsFiles, base_url,
};

/// One thing wrong with a config file, located by its key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// e.g. `endpoints[2].url`; empty for the file as a whole.
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

/// Every problem found in a file; never empty.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in {}", self.problems.len(), self.file)?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.file)?;
        }
        Ok(())
    }
}

/// Collects problems while a file is converted, so all are reported at once.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, reason: impl fmt::Display) {
        self.0.push(Problem {
            path: path.into(),
            reason: reason.to_string(),
        });
    }
}

impl Config {
    /// Reads and converts a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            problems: vec![Problem {
                path: String::new(),
                reason: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(&text).map_err(|problems| ConfigError { file, problems })
    }

    /// Converts TOML text; `Err` lists every problem found.
    pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
        let s = Self::parse_sections(text, &[]);
        match s.config {
            Some(c) if s.problems.is_empty() => Ok(c),
            _ => Err(s.problems),
        }
    }

    /// Converts the gateway's sections of TOML text and hands back the
    /// sections named in `extra` untouched, so a caller can deserialize
    /// them with types this crate does not know. Problems of the gateway
    /// sections are in [`Sections::problems`]; the caller adds its own.
    pub fn parse_sections(text: &str, extra: &[&str]) -> Sections {
        let mut problems = Problems::default();
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                problems.push("", e.to_string().trim_end());
                return Sections {
                    config: None,
                    extra: toml::Table::new(),
                    problems: problems.0,
                };
            }
        };
        let mut taken = toml::Table::new();
        for name in extra {
            if let Some(v) = table.remove(*name) {
                taken.insert((*name).to_owned(), v);
            }
        }
        let config = convert::convert(table, extra, &mut problems);
        Sections {
            config: config.filter(|_| problems.0.is_empty()),
            extra: taken,
            problems: problems.0,
        }
    }
}
