//! The `[[keys]]` and `[admin]` sections: client keys with their limits and pins, and where the admin token comes from.

use serde::Deserialize;

use super::{Problems, raw};
use crate::policy::{
    ClientKey, KeySet, RawClientKey,
    keys::{self, KeyProblem},
};

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Name of the environment variable holding the admin API token.
    pub token_env: Option<String>,
}

/// Where the admin API's token comes from; the token is read when the
/// config is applied, so it never sits in the config value itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// `None`: no token, so the `/admin/*` paths refuse every request.
    pub token_env: Option<String>,
}

pub(super) fn convert_admin(raw: RawAdmin, p: &mut Problems) -> AdminConfig {
    if let Some(var) = &raw.token_env
        && (var.is_empty() || var.contains('=') || var.contains('\0'))
    {
        p.push("admin.token_env", "not a valid environment variable name");
    }
    AdminConfig {
        token_env: raw.token_env,
    }
}

/// Builds the key set from `[[keys]]` and the older `auth.client_key_sha256`
/// list, whose entries become keys with no limits named `client-key-N`.
pub(super) fn convert_keys(table: &mut toml::Table, auth: raw::Auth, p: &mut Problems) -> KeySet {
    let mut problems: Vec<KeyProblem> = Vec::new();
    let mut all = Vec::new();
    let mut paths = Vec::new();
    for (i, h) in auth.client_key_sha256.iter().enumerate() {
        let at = format!("auth.client_key_sha256[{i}]");
        match keys::parse_digest(h) {
            Some(d) => {
                all.push(ClientKey::unlimited(format!("client-key-{i}"), d));
                paths.push(at);
            }
            None => problems.push((
                at,
                "expected 64 hex characters (the SHA-256 of a key, not the key)".into(),
            )),
        }
    }
    match table.remove("keys") {
        None => {}
        Some(toml::Value::Array(items)) => {
            // Indexed here rather than through the generic list reader so that
            // every problem names the entry's own position in the file.
            for (i, item) in items.into_iter().enumerate() {
                let at = format!("keys[{i}]");
                match item.try_into::<RawClientKey>() {
                    Ok(raw) => {
                        if let Some(k) = keys::convert(&at, raw, &mut problems) {
                            all.push(k);
                            paths.push(at);
                        }
                    }
                    Err(e) => problems.push((at, e.message().trim_end().to_owned())),
                }
            }
        }
        Some(_) => problems.push((
            "keys".into(),
            "expected an array of tables ([[keys]])".into(),
        )),
    }
    let set = KeySet::new(all, &paths, &mut problems);
    for (path, reason) in problems {
        p.push(path, reason);
    }
    set
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const KEY_HASH: &str = "7b5d7e0c5e4a43f6c0b9b4b0c83a1d2b3c4d5e6f708192a3b4c5d6e7f8091a2b";

    #[test]
    fn keys_and_admin_parse_with_the_legacy_list_kept() {
        let c = Config::parse(&format!(
            r#"
            [auth]
            client_key_sha256 = ["{}"]
            [admin]
            token_env = "LEASEGATE_ADMIN_TOKEN"
            [[keys]]
            name = "team-a"
            sha256 = "{KEY_HASH}"
            allowed_models = ["m"]
            requests_per_minute = 60
            tokens_per_minute = 10000
            budget_usd_per_day = 5.0
            regions = ["eu"]
            allow_region_header = true
            "#,
            "0".repeat(64)
        ))
        .unwrap();
        let names: Vec<&str> = c.keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["client-key-0", "team-a"]);
        let a = c.keys.iter().nth(1).unwrap();
        assert_eq!(a.limits.requests_per_minute.map(|n| n.get()), Some(60));
        assert!(a.residency.allows("eu-central") && !a.residency.allows("us-east-1"));
        assert_eq!(c.admin.token_env.as_deref(), Some("LEASEGATE_ADMIN_TOKEN"));
    }

    #[test]
    fn every_key_problem_is_reported_with_its_own_index() {
        let problems = Config::parse(&format!(
            r#"
            [[keys]]
            name = "ok"
            sha256 = "{KEY_HASH}"
            [[keys]]
            name = "bad"
            sha256 = "{KEY_HASH}"
            rpm = 5
            [[keys]]
            name = "ok"
            sha256 = "nothex"
            regions = ["atlantis"]
            [admin]
            token_env = ""
            colour = "blue"
            "#
        ))
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"keys[1]"), "{problems:?}");
        assert!(paths.contains(&"keys[2].sha256"), "{problems:?}");
        assert!(paths.contains(&"keys[2].regions[0]"), "{problems:?}");
        assert!(paths.contains(&"admin"), "{problems:?}");
    }
}
