//! Client keys: the `[[keys]]` records of the config, stored only as SHA-256 digests, and new-key generation.

use std::{collections::BTreeSet, fmt, num::NonZeroU64};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::residency::Residency;

/// One `[[keys]]` table as written in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientKey {
    /// Who the key belongs to; shown in logs, metrics and the admin API instead of the key.
    pub name: String,
    /// Lowercase hex SHA-256 of the key, as `leasegate keys create` prints it.
    pub sha256: String,
    /// Models (or aliases) this key may use; empty means all.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub budget_usd_per_day: Option<f64>,
    /// Residency pin: region codes and continent codes (`eu`); empty means anywhere.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Whether the key may place itself with the `x-leasegate-region` header.
    #[serde(default)]
    pub allow_region_header: bool,
}

/// Per-key limits; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KeyLimits {
    pub requests_per_minute: Option<NonZeroU64>,
    pub tokens_per_minute: Option<NonZeroU64>,
    pub budget_usd_per_day: Option<f64>,
}

/// A SHA-256 digest of a client key; the key itself is never kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl fmt::Debug for KeyDigest {
    /// A digest is not the secret, but printing a prefix is enough to tell keys apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}..)", hex::encode(&self.0[..4]))
    }
}

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Compares all 32 bytes without an early exit, so timing reveals nothing.
    pub(crate) fn ct_eq(&self, other: &KeyDigest) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// A client key's policy, ready to use.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientKey {
    pub name: String,
    pub digest: KeyDigest,
    /// Empty means every model.
    pub allowed_models: BTreeSet<String>,
    pub limits: KeyLimits,
    pub residency: Residency,
    pub allow_region_header: bool,
}

impl ClientKey {
    /// A key from the legacy `auth.client_key_sha256` list: no limits, no
    /// pin, and the region header as the global `[geo]` switch says.
    pub fn unlimited(name: String, digest: KeyDigest) -> Self {
        Self {
            name,
            digest,
            allowed_models: BTreeSet::new(),
            limits: KeyLimits::default(),
            residency: Residency::default(),
            allow_region_header: true,
        }
    }

    /// Whether this key may use `model`, the name the client sent (alias or pool).
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.contains(model)
    }
}

/// One problem with a `[[keys]]` entry: the key path under `at` and the reason.
pub type KeyProblem = (String, String);

/// Parses 64 hex characters into a digest.
pub fn parse_digest(hex_text: &str) -> Option<KeyDigest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut digest).ok()?;
    Some(KeyDigest(digest))
}

/// Converts one raw entry found at key path `at` (e.g. `keys[2]`), recording every problem.
pub fn convert(at: &str, raw: RawClientKey, problems: &mut Vec<KeyProblem>) -> Option<ClientKey> {
    let mut push = |key: &str, reason: String| problems.push((format!("{at}.{key}"), reason));
    if raw.name.trim().is_empty() {
        push("name", "must not be empty".into());
    }
    let digest = parse_digest(&raw.sha256);
    if digest.is_none() {
        push(
            "sha256",
            "expected 64 hex characters (the SHA-256 of a key, not the key; see `leasegate keys create`)"
                .into(),
        );
    }
    let mut positive = |key: &str, v: Option<u64>| match v {
        None => None,
        Some(n) => NonZeroU64::new(n).or_else(|| {
            push(key, "must be at least 1 (leave it out for no limit)".into());
            None
        }),
    };
    let requests_per_minute = positive("requests_per_minute", raw.requests_per_minute);
    let tokens_per_minute = positive("tokens_per_minute", raw.tokens_per_minute);
    if let Some(b) = raw.budget_usd_per_day
        && !(b >= 0.0 && b.is_finite())
    {
        push("budget_usd_per_day", "must be a non-negative number".into());
    }
    if raw.allowed_models.iter().any(|m| m.trim().is_empty()) {
        push("allowed_models", "model names must not be empty".into());
    }
    let residency = match Residency::parse(&raw.regions) {
        Ok(r) => r,
        Err(bad) => {
            for (i, e) in bad {
                push(&format!("regions[{i}]"), e.to_string());
            }
            Residency::default()
        }
    };
    Some(ClientKey {
        name: raw.name,
        digest: digest?,
        allowed_models: raw.allowed_models.into_iter().collect(),
        limits: KeyLimits {
            requests_per_minute,
            tokens_per_minute,
            budget_usd_per_day: raw.budget_usd_per_day,
        },
        residency,
        allow_region_header: raw.allow_region_header,
    })
}

/// The accepted keys. Empty means the API is open (no key required).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<ClientKey>,
}

impl KeySet {
    /// Builds the set, refusing duplicate names or digests: either would make
    /// limits and logs ambiguous. `paths[i]` is the key path of `keys[i]`.
    pub fn new(keys: Vec<ClientKey>, paths: &[String], problems: &mut Vec<KeyProblem>) -> Self {
        for (i, k) in keys.iter().enumerate() {
            let at = paths.get(i).map_or("keys", String::as_str);
            if keys[..i].iter().any(|o| o.name == k.name) {
                problems.push((format!("{at}.name"), format!("duplicate name `{}`", k.name)));
            }
            if keys[..i].iter().any(|o| o.digest == k.digest) {
                problems.push((
                    format!("{at}.sha256"),
                    "the same key digest is listed twice".into(),
                ));
            }
        }
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ClientKey> {
        self.keys.iter()
    }

    /// The key whose digest matches `presented`.
    ///
    /// Every configured digest is compared, without an early exit, so the
    /// time taken says nothing about which key or byte matched.
    pub fn authenticate(&self, presented: &str) -> Option<&ClientKey> {
        let digest = KeyDigest::of(presented);
        self.keys.iter().fold(None, |found, k| {
            if digest.ct_eq(&k.digest) {
                Some(k)
            } else {
                found
            }
        })
    }
}

/// Prefix of generated keys, so a leaked one is recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "lg-";

/// A new client key and its SHA-256 (hex), the only form the config stores.
///
/// 32 bytes from the OS CSPRNG, base64url without padding: `lg-` + 43 characters.
pub fn generate() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!("{KEY_PREFIX}{}", base64url(&bytes));
    let hash = hex::encode(KeyDigest::of(&key).0);
    Ok((key, hash))
}

/// Base64url (RFC 4648 §5) without padding.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of k bytes yields k+1 characters.
        for i in 0..=chunk.len() {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, key: &str) -> RawClientKey {
        RawClientKey {
            name: name.into(),
            sha256: hex::encode(KeyDigest::of(key).0),
            allowed_models: vec![],
            requests_per_minute: None,
            tokens_per_minute: None,
            budget_usd_per_day: None,
            regions: vec![],
            allow_region_header: false,
        }
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        // RFC 4648 §10 vectors, unpadded; plus bytes that use '-' and '_'.
        for (input, want) in [
            (&b""[..], ""),
            (b"f", "Zg"),
            (b"fo", "Zm8"),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg"),
            (b"fooba", "Zm9vYmE"),
            (b"foobar", "Zm9vYmFy"),
            (&[0xfb, 0xff], "-_8"),
        ] {
            assert_eq!(base64url(input), want);
        }
    }

    #[test]
    fn generated_keys_have_the_documented_shape_and_hash() {
        let (key, hash) = generate().unwrap();
        let body = key.strip_prefix(KEY_PREFIX).unwrap();
        assert_eq!(body.len(), 43);
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(parse_digest(&hash), Some(KeyDigest::of(&key)));
        let (other, _) = generate().unwrap();
        assert_ne!(key, other);
    }

    #[test]
    fn a_generated_key_authenticates_by_its_printed_hash() {
        let (key, hash) = generate().unwrap();
        let mut r = raw("ci", "unused");
        r.sha256 = hash;
        let mut problems = vec![];
        let k = convert("keys[0]", r, &mut problems).unwrap();
        let set = KeySet::new(vec![k], &["keys[0]".into()], &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.authenticate(&key).map(|k| k.name.as_str()), Some("ci"));
        assert!(set.authenticate("lg-wrong").is_none());
    }

    #[test]
    fn convert_reports_every_problem_by_key_path() {
        let mut r = raw("", "k");
        r.sha256 = "lg-not-a-hash".into();
        r.requests_per_minute = Some(0);
        r.budget_usd_per_day = Some(-1.0);
        r.regions = vec!["eu".into(), "nowhere".into()];
        let mut problems = vec![];
        assert!(convert("keys[3]", r, &mut problems).is_none());
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "keys[3].name",
                "keys[3].sha256",
                "keys[3].requests_per_minute",
                "keys[3].budget_usd_per_day",
                "keys[3].regions[1]",
            ]
        );
        // The reason never echoes what was in the sha256 field: someone may
        // have pasted the key itself there.
        assert!(
            !problems
                .iter()
                .any(|(_, why)| why.contains("lg-not-a-hash"))
        );
    }

    #[test]
    fn duplicate_names_and_digests_are_refused() {
        let mut problems = vec![];
        let a = convert("keys[0]", raw("a", "k1"), &mut problems).unwrap();
        let b = convert("keys[1]", raw("a", "k1"), &mut problems).unwrap();
        KeySet::new(
            vec![a, b],
            &["keys[0]".into(), "keys[1]".into()],
            &mut problems,
        );
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["keys[1].name", "keys[1].sha256"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<RawClientKey>("name='a'\nsha256='00'\nrpm=3\n").unwrap_err();
        assert!(err.message().contains("unknown field `rpm`"), "{err}");
    }

    #[test]
    fn empty_allowed_models_means_all() {
        let mut problems = vec![];
        let mut k = convert("keys[0]", raw("a", "k"), &mut problems).unwrap();
        assert!(k.allows_model("anything"));
        k.allowed_models.insert("m1".into());
        assert!(k.allows_model("m1") && !k.allows_model("m2"));
    }

    #[test]
    fn digest_debug_does_not_print_the_whole_digest() {
        let d = KeyDigest::of("secret");
        assert_eq!(format!("{d:?}").len(), "KeyDigest(01234567..)".len());
    }
}
