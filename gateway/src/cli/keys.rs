//! `leasegate keys create`: a new client key, printed once, with the `[[keys]]` entry to paste.

use std::process::ExitCode;

use crate::policy::keys;

/// Prints a new key and its config entry to stdout. The key is not kept
/// anywhere: only its SHA-256 goes into the config.
pub fn create(name: &str) -> ExitCode {
    match keys::generate() {
        Ok((key, sha256)) => {
            println!("{}", entry(name, &key, &sha256));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("leasegate: cannot read the OS random number generator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn entry(name: &str, key: &str, sha256: &str) -> String {
    // `name` goes into TOML: escape it as a basic string.
    let name = toml::Value::String(name.to_owned()).to_string();
    format!(
        "New client key (shown once; it cannot be recovered from the config):\n\n    {key}\n\n\
         Add this to the config file ([[keys]] takes the same limits as any key):\n\n\
         [[keys]]\nname = {name}\nsha256 = \"{sha256}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_printed_entry_parses_and_accepts_the_printed_key() {
        let (key, sha256) = keys::generate().unwrap();
        let text = entry("team \"a\"", &key, &sha256);
        let toml_part = &text[text.rfind("[[keys]]").unwrap()..];
        assert!(
            !toml_part.contains(&key),
            "the key itself never goes into the config"
        );
        let config = Config::parse(toml_part).unwrap();
        let policy = crate::policy::Policy::new(config.keys, None);
        assert_eq!(
            policy.identify(Some(&key)).unwrap().unwrap().name,
            "team \"a\""
        );
    }
}
