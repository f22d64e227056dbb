//! The GeoIP database: one or more mmdb files behind a lookup cache, swapped whole on reload.
//!
//! Two layouts are common: a single GeoIP2/GeoLite2 City file, and the DB-IP
//! files from ip-location-db with IPv4 and IPv6 in separate files and a flat
//! record schema. Both are read through one record type that holds the
//! fields of either schema, so the schema is detected per record.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use leasegate_fleet::region::Continent;
use maxminddb::{MaxMindDbError, Reader};
use moka::sync::Cache;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::client_ip::canonical;
use super::{CountryCode, Location};

/// Why a GeoIP database could not be opened. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("no GeoIP database file given")]
    NoFiles,
    #[error("cannot read GeoIP database {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GeoIP database {} is not a usable MaxMind DB file: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
}

/// Cache and check settings.
#[derive(Clone, Debug)]
pub struct GeoOptions {
    /// Addresses kept in the lookup cache (0 disables caching).
    pub cache_capacity: u64,
    /// How long a cached answer lives; a reload starts a fresh cache anyway.
    pub cache_ttl: Duration,
    /// Walk the whole file at open with `maxminddb`'s verifier. Thorough but
    /// takes seconds on a full-size City database, and the verifier is
    /// stricter than the format, so it is off by default.
    pub verify: bool,
}

impl Default for GeoOptions {
    fn default() -> Self {
        GeoOptions {
            cache_capacity: 100_000,
            cache_ttl: Duration::from_secs(600),
            verify: false,
        }
    }
}

/// moka panics on a TTL above 1,000 years; nobody needs more than one.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Addresses looked up at open so that a file whose tree or records are
/// damaged fails at startup instead of silently answering `None`.
const PROBES: [IpAddr; 4] = [
    IpAddr::V4(std::net::Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(std::net::Ipv4Addr::new(81, 2, 69, 142)),
    IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1)),
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001, 0x4860, 0, 0, 0, 0, 0, 0x8888,
    )),
];

/// Client address to location, safe to share across requests.
pub struct GeoDb {
    loaded: ArcSwap<Loaded>,
    options: GeoOptions,
}

/// One generation of files and the cache of answers they gave.
///
/// The cache lives inside the generation so that a lookup racing a reload
/// can never put an answer from the old files into the new cache.
struct Loaded {
    sources: Vec<Source>,
    cache: Cache<IpAddr, Option<Location>>,
}

struct Source {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl GeoDb {
    /// Opens the files: one City database, or separate IPv4 and IPv6 files
    /// (queried in the order given). Reads whole files; call it off the
    /// async runtime (e.g. `spawn_blocking`) when the files are large.
    pub fn open<P: AsRef<Path>>(paths: &[P], options: GeoOptions) -> Result<Self, GeoError> {
        let loaded = Loaded::open(paths, &options)?;
        Ok(GeoDb {
            loaded: ArcSwap::from_pointee(loaded),
            options,
        })
    }

    /// Opens the new files and swaps them in only if all of them open; on
    /// error the current database stays in service.
    pub fn reload<P: AsRef<Path>>(&self, paths: &[P]) -> Result<(), GeoError> {
        let loaded = Loaded::open(paths, &self.options)?;
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }

    /// The location of `ip`, or `None` when no file knows it (private
    /// ranges, unallocated space, records without coordinates, or a record
    /// that fails to decode).
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        let ip = canonical(ip);
        let loaded = self.loaded.load();
        loaded.cache.get_with(ip, || loaded.find(ip))
    }

    /// The files in service.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.loaded
            .load()
            .sources
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("paths", &self.paths())
            .field("options", &self.options)
            .finish()
    }
}

impl Loaded {
    fn open<P: AsRef<Path>>(paths: &[P], options: &GeoOptions) -> Result<Self, GeoError> {
        if paths.is_empty() {
            return Err(GeoError::NoFiles);
        }
        let sources = paths
            .iter()
            .map(|p| Source::open(p.as_ref(), options.verify))
            .collect::<Result<Vec<_>, _>>()?;
        let cache = Cache::builder()
            .max_capacity(options.cache_capacity)
            .time_to_live(options.cache_ttl.min(MAX_TTL))
            .build();
        Ok(Loaded { sources, cache })
    }

    /// The first file with a location for `ip` wins: in the split layout the
    /// IPv4 file answers IPv4 and the IPv6 file the rest.
    fn find(&self, ip: IpAddr) -> Option<Location> {
        self.sources.iter().find_map(|s| match s.record(ip) {
            Ok(record) => record.and_then(RawRecord::location),
            Err(error) => {
                tracing::debug!(path = %s.path.display(), %ip, %error, "GeoIP record unreadable");
                None
            }
        })
    }
}

impl Source {
    fn open(path: &Path, verify: bool) -> Result<Self, GeoError> {
        let invalid = |source| GeoError::Invalid {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_owned(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(invalid)?;
        if verify {
            reader.verify().map_err(invalid)?;
        }
        let source = Source {
            path: path.to_owned(),
            reader,
        };
        for probe in PROBES {
            source.record(probe).map_err(invalid)?;
        }
        Ok(source)
    }

    fn record(&self, ip: IpAddr) -> Result<Option<RawRecord>, MaxMindDbError> {
        // An IPv4-only file cannot hold IPv6 addresses; asking it is an error
        // in maxminddb, not a miss.
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Ok(None);
        }
        self.reader.lookup(ip)?.decode::<RawRecord>()
    }
}

/// The fields of both schemas we use; any may be missing. A field of an
/// unexpected type is ignored rather than failing the whole record, so a
/// custom database that reuses a name (e.g. `country` as a string) still
/// yields what it can.
#[derive(Debug, Default, Deserialize)]
struct RawRecord {
    // GeoIP2/GeoLite2 City.
    #[serde(default)]
    location: Lenient<RawLocation>,
    #[serde(default)]
    country: Lenient<RawCountry>,
    /// GeoIP2 leaves `country` out for some networks (e.g. anycast) and only
    /// records where the block is registered.
    #[serde(default)]
    registered_country: Lenient<RawCountry>,
    #[serde(default)]
    continent: Lenient<RawContinent>,
    // ip-location-db / DB-IP flat schema: coordinates are f32.
    #[serde(default)]
    latitude: Lenient<f64>,
    #[serde(default)]
    longitude: Lenient<f64>,
    #[serde(default)]
    country_code: Lenient<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawLocation {
    #[serde(default)]
    latitude: Lenient<f64>,
    #[serde(default)]
    longitude: Lenient<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCountry {
    #[serde(default)]
    iso_code: Lenient<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawContinent {
    #[serde(default)]
    code: Lenient<String>,
}

/// A value of type `T`, or anything else (which counts as absent).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Value(T),
    Other(IgnoredAny),
}

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient::Other(IgnoredAny)
    }
}

impl<T> Lenient<T> {
    fn get(self) -> Option<T> {
        match self {
            Lenient::Value(v) => Some(v),
            Lenient::Other(_) => None,
        }
    }
}

impl RawRecord {
    fn location(self) -> Option<Location> {
        let (nested_lat, nested_lon) = match self.location.get() {
            Some(l) => (l.latitude.get(), l.longitude.get()),
            None => (None, None),
        };
        let lat = nested_lat.or(self.latitude.get())?;
        let lon = nested_lon.or(self.longitude.get())?;
        // (0, 0) is how some exports spell "unknown"; nobody's clients are
        // in the Gulf of Guinea.
        let valid = lat.is_finite()
            && lon.is_finite()
            && (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon)
            && !(lat == 0.0 && lon == 0.0);
        if !valid {
            return None;
        }
        let iso = |c: Lenient<RawCountry>| c.get().and_then(|c| c.iso_code.get());
        let country = iso(self.country)
            .or_else(|| iso(self.registered_country))
            .or_else(|| self.country_code.get())
            .and_then(|code| CountryCode::new(&code));
        let continent = self
            .continent
            .get()
            .and_then(|c| c.code.get())
            .and_then(|code| Continent::from_code(&code));
        Some(Location {
            lat,
            lon,
            country,
            continent,
        })
    }
}
