//! Where the client is: client-IP extraction, GeoIP (mmdb) lookup and the region header override.
//!
//! The route stage asks this module for a [`Location`] and turns it into a
//! distance term. Every path here degrades to "no location" rather than an
//! error: an unknown client simply gets no geography term in the score.

mod client_ip;
mod db;

use std::net::{IpAddr, SocketAddr};

pub use client_ip::client_ip;
pub use db::{GeoDb, GeoError, GeoOptions};
use http::HeaderMap;
use ipnet::IpNet;
use leasegate_fleet::region::{self, Continent, RegionInfo};

/// The request header that names the client's region explicitly.
pub const REGION_HEADER: &str = "x-leasegate-region";

/// Where a client is, as far as the GeoIP database knows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub country: Option<CountryCode>,
    /// Only the GeoIP2/GeoLite2 schema records the continent.
    pub continent: Option<Continent>,
}

impl Location {
    /// Great-circle distance to a point, in km.
    pub fn distance_km(&self, lat: f64, lon: f64) -> f64 {
        region::haversine_km(self.lat, self.lon, lat, lon)
    }
}

impl From<RegionInfo> for Location {
    /// A region named by the override header stands for a client at its centre.
    fn from(r: RegionInfo) -> Self {
        Location {
            lat: r.lat,
            lon: r.lon,
            country: r.country.and_then(CountryCode::new),
            continent: Some(r.continent),
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, stored upper-case.
///
/// Two bytes instead of a `String` keep [`Location`] `Copy`, so cache hits
/// allocate nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Accepts exactly two ASCII letters, in any case.
    pub fn new(code: &str) -> Option<Self> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl std::fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for CountryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for CountryCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str().eq_ignore_ascii_case(other)
    }
}

/// The region named by the `x-leasegate-region` header, when policy allows it.
///
/// `allowed` is the tenant policy: a client may only steer its own routing
/// when its key says so. An unknown code, a value that is not text, or a
/// repeated header (which of the two would we believe?) yields `None`, and
/// routing falls back to the GeoIP location.
pub fn region_override(headers: &HeaderMap, allowed: bool) -> Option<RegionInfo> {
    if !allowed {
        return None;
    }
    let mut values = headers.get_all(REGION_HEADER).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    region::lookup(value.to_str().ok()?)
}

/// Where a request comes from, and how we know.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Located {
    /// The client address (see [`client_ip`]), whichever source placed it.
    pub ip: IpAddr,
    pub location: Option<Location>,
    pub source: LocationSource,
}

/// What placed the client, for explain headers and the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationSource {
    /// The `x-leasegate-region` header, naming this catalogue code.
    RegionHeader(&'static str),
    GeoIp,
    /// No database, or the address is not in it: no geography term.
    Unknown,
}

/// The geo stage in one call: the region header when `allow_override`,
/// else the GeoIP location of the client address.
pub fn locate(
    db: Option<&GeoDb>,
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    allow_override: bool,
) -> Located {
    let ip = client_ip(peer, headers, trusted);
    if let Some(r) = region_override(headers, allow_override) {
        return Located {
            ip,
            location: Some(r.into()),
            source: LocationSource::RegionHeader(r.code),
        };
    }
    match db.and_then(|db| db.lookup(ip)) {
        Some(location) => Located {
            ip,
            location: Some(location),
            source: LocationSource::GeoIp,
        },
        None => Located {
            ip,
            location: None,
            source: LocationSource::Unknown,
        },
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn region_override_needs_policy_and_a_known_code() {
        let mut headers = HeaderMap::new();
        headers.insert(REGION_HEADER, HeaderValue::from_static("EU-Central"));
        assert_eq!(region_override(&headers, false), None);
        assert_eq!(region_override(&headers, true).unwrap().code, "eu-central");

        headers.insert(REGION_HEADER, HeaderValue::from_static("atlantis"));
        assert_eq!(region_override(&headers, true), None);

        headers.insert(REGION_HEADER, HeaderValue::from_static("us-east-1"));
        headers.append(REGION_HEADER, HeaderValue::from_static("eu-west-1"));
        assert_eq!(region_override(&headers, true), None);

        assert_eq!(region_override(&HeaderMap::new(), true), None);
    }

    #[test]
    fn locate_prefers_an_allowed_region_header() {
        let peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(REGION_HEADER, HeaderValue::from_static("ap-northeast-1"));
        let got = locate(None, peer, &headers, &[], true);
        assert_eq!(got.source, LocationSource::RegionHeader("ap-northeast-1"));
        assert_eq!(got.location.unwrap().country.unwrap(), "JP");
        assert_eq!(got.ip, peer.ip());

        let got = locate(None, peer, &headers, &[], false);
        assert_eq!(got.source, LocationSource::Unknown);
        assert_eq!(got.location, None);
    }

    #[test]
    fn country_code_accepts_only_two_letters() {
        assert_eq!(CountryCode::new("gb").unwrap().as_str(), "GB");
        assert!(CountryCode::new("G").is_none());
        assert!(CountryCode::new("GBR").is_none());
        assert!(CountryCode::new("1A").is_none());
        assert!(CountryCode::new("é").is_none());
        assert_eq!(CountryCode::new("se").unwrap(), "SE");
    }

    #[test]
    fn region_location_sits_at_the_region_centre() {
        let r = region::lookup("eu-west-2").unwrap();
        let loc = Location::from(r);
        assert_eq!(loc.country.unwrap(), "GB");
        assert_eq!(loc.continent, Some(Continent::Europe));
        assert!(loc.distance_km(r.lat, r.lon) < 0.001);
    }
}
