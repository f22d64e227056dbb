//! Data residency: the set of regions a key's (or a pool's) requests may be served in.
//!
//! A pin lists region codes (`eu-central`, `eu-west-1`) and continent codes
//! (`eu`, `na`, ...). A region is allowed when it is listed itself or lies on
//! a listed continent according to the built-in catalogue. Every check fails
//! closed: a region code the catalogue does not know is outside every
//! continent, so an endpoint of unknown whereabouts never serves a pinned key.

use std::fmt;

use leasegate_fleet::region::{self, Continent};

/// Where requests may go. The default, an empty pin, allows every region.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Residency {
    /// Canonical (lower-case) catalogue codes.
    regions: Vec<String>,
    continents: Vec<Continent>,
}

/// A pin entry that is neither a catalogue region nor a continent code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is neither a known region code (e.g. eu-central, us-east-1) nor a continent (af, an, as, eu, na, oc, sa)"
)]
pub struct UnknownRegion(pub String);

impl Residency {
    /// Resolves each entry: a catalogue region first, then a continent code.
    ///
    /// Region codes win because they are the more specific reading; no
    /// catalogue code is two letters long, so the two never collide.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Vec<(usize, UnknownRegion)>> {
        let mut pin = Residency::default();
        let mut bad = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.as_ref().trim();
            if let Some(info) = region::lookup(entry) {
                if !pin.regions.iter().any(|r| r == info.code) {
                    pin.regions.push(info.code.to_owned());
                }
            } else if let Some(c) = Continent::from_code(entry) {
                if !pin.continents.contains(&c) {
                    pin.continents.push(c);
                }
            } else {
                bad.push((i, UnknownRegion(entry.to_owned())));
            }
        }
        if bad.is_empty() { Ok(pin) } else { Err(bad) }
    }

    /// True when this pin restricts anything.
    pub fn is_pinned(&self) -> bool {
        !self.regions.is_empty() || !self.continents.is_empty()
    }

    /// Whether a request under this pin may be served in `region_code`.
    pub fn allows(&self, region_code: &str) -> bool {
        if !self.is_pinned() {
            return true;
        }
        let Some(info) = region::lookup(region_code) else {
            return false;
        };
        self.regions.iter().any(|r| r == info.code) || self.continents.contains(&info.continent)
    }
}

impl fmt::Display for Residency {
    /// `eu, us-east-1`, or `any` for no pin: safe to show a client, it is their own policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_pinned() {
            return f.write_str("any");
        }
        let names = self
            .continents
            .iter()
            .map(|c| c.code().to_ascii_lowercase())
            .chain(self.regions.iter().cloned())
            .collect::<Vec<_>>();
        f.write_str(&names.join(", "))
    }
}

/// A request may go to `region_code` only when both the key's pin and the pool's pin allow it.
///
/// Callers apply this to every candidate, fallbacks included: a fallback
/// declares its region like any endpoint, so an EU-pinned key never reaches
/// a fallback outside the EU.
pub fn allowed(key: &Residency, pool: &Residency, region_code: &str) -> bool {
    key.allows(region_code) && pool.allows(region_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(entries: &[&str]) -> Residency {
        Residency::parse(entries).unwrap()
    }

    #[test]
    fn no_pin_allows_everything_even_unknown_regions() {
        let any = Residency::default();
        assert!(!any.is_pinned());
        for code in ["eu-central", "us-east-1", "unknown", ""] {
            assert!(any.allows(code), "{code}");
        }
        assert_eq!(any.to_string(), "any");
    }

    #[test]
    fn a_continent_pin_allows_exactly_that_continent() {
        let eu = pin(&["EU"]);
        for code in ["eu-central", "eu-west-1", "europe-west3", "EU-CENTRAL"] {
            assert!(eu.allows(code), "{code}");
        }
        for code in ["na-us-west", "us-east-1", "as-east", "ap-northeast-1"] {
            assert!(!eu.allows(code), "{code}");
        }
        assert_eq!(eu.to_string(), "eu");
    }

    #[test]
    fn a_region_pin_allows_only_that_region() {
        let fra = pin(&["eu-central-1", " eu-central-1 "]);
        assert!(fra.allows("eu-central-1"));
        assert!(!fra.allows("eu-west-1"));
        assert_eq!(fra.to_string(), "eu-central-1");
    }

    #[test]
    fn regression_unknown_region_never_satisfies_a_pin() {
        // The config default for an endpoint without a region is "unknown":
        // it must not slip past a residency pin.
        let eu = pin(&["eu"]);
        assert!(!eu.allows("unknown"));
        assert!(!eu.allows(""));
        assert!(!eu.allows("mars-north-1"));
    }

    #[test]
    fn bad_entries_are_reported_with_their_index() {
        let err = Residency::parse(&["eu", "atlantis", "us-east-1", "xx"]).unwrap_err();
        let idx: Vec<usize> = err.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [1, 3]);
        assert!(err[0].1.to_string().contains("atlantis"));
    }

    #[test]
    fn key_and_pool_pins_intersect() {
        let eu = pin(&["eu"]);
        let fra = pin(&["eu-central-1"]);
        let any = Residency::default();
        assert!(allowed(&eu, &any, "eu-west-1"));
        assert!(!allowed(&eu, &fra, "eu-west-1"));
        assert!(allowed(&eu, &fra, "eu-central-1"));
        assert!(!allowed(&any, &fra, "us-east-1"));
    }
}
